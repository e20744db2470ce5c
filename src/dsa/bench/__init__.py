"""`dsa bench`: what the one-pass design costs, as ratios measured interleaved in one run.

    dsa bench                      # results/bench.json + docs/results-bench.md + docs/img/bench-*.png
    dsa bench --quick              # a < 60 s smoke run (one small cell per section)
    dsa bench --device cuda        # bf16, batch 32
    dsa bench --doc-only           # regenerate the doc and plots from results/bench.json

Modules: `timing` (interleaved repetitions, ratio statistics), `workloads` (prompts of exact token
lengths, head variants), `prefill` (guard overhead against standalone guards), `decode` (streaming
guard, context-dependent alignment, runtime vs `model.generate`), `system` (machine, memory,
server throughput), `run` (the config and the entry point), `doc` (page and plots).
"""
