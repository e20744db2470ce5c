"""`dsa bench` on a tiny random model: every section runs, the results have the issue's keys, and the
doc and plots are generated from the results file alone. No timing is asserted."""

from __future__ import annotations

import json
import math

from dsa.bench.doc import write_bench_doc
from dsa.bench.run import BenchConfig, run_bench
from dsa.bench.timing import interleave, spread
from dsa.bench.workloads import prompt_batch


def test_prompt_batch_has_exact_lengths(tiny_base):
    enc, texts = prompt_batch(tiny_base, 24, 3)
    assert enc["input_ids"].shape == (3, 24) and bool(enc["attention_mask"].all()) and len(texts) == 3


def test_interleave_rotates_the_order():
    seen = []
    arms = {k: (lambda k=k: seen.append(k)) for k in "abc"}
    runs = interleave(arms, reps=3, warmup=0)
    assert seen == list("abcbcacab") and all(len(v) == 3 for v in runs.values())
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def test_bench_tiny_model_writes_results_and_doc(tiny_base, tmp_path):
    cfg = BenchConfig.quick(lengths=(16,), batches=(1, 2), stream_lengths=(4, 8), request_tokens=3,
                            decode_batches=(1, 2), decode_tokens=3, generative_tokens=2, guards_dir=None,
                            out=str(tmp_path / "bench.json"), doc=str(tmp_path / "bench.md"))
    res = run_bench(cfg, base=tiny_base, log=lambda *_: None)
    for k in ("plr", "mlp", "rtb", "lst", "all_shipped", "minilm_standalone", "second_pass", "generative_guard"):
        assert math.isfinite(res["guard_overhead"][k]) and res["guard_overhead"][k] > 0, k
    assert set(res["streaming_per_token"]) == {"4", "8"}
    assert set(res["runtime_vs_generate"]) == {"1", "2"}
    assert res["requests_detail"]["flagged"]["lambda"] == 1.0
    assert res["benign_request"] > 0 and res["flagged_request"] > 0 and "cores" in res["machine"]
    assert all(h["random_weights"] for h in res["heads"].values())  # no shipped guard fits a tiny model
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["guard_overhead"] == res["guard_overhead"]
    doc = write_bench_doc(tmp_path / "bench.json", tmp_path / "bench.md", tmp_path / "img")
    text = doc.read_text()
    assert "## Targets" in text and "dsa bench --doc-only" in text and "b2×16" in text
    assert (tmp_path / "img" / "bench-batch.png").exists() and (tmp_path / "img" / "bench-streaming.png").exists()


def test_minilm_classifier_runs_in_bf16():
    """The standalone baseline is benchmarked in the base's dtype: a float mask must not promote
    its bf16 states past the bf16 head."""
    import torch

    from dsa.guards.baselines import MiniLMClassifier

    model = MiniLMClassifier(1).to(dtype=torch.bfloat16).eval()
    with torch.inference_mode():
        out = model(torch.tensor([[101, 2023, 102, 0]]), torch.tensor([[1, 1, 1, 0]]))
    assert out.shape == (1, 1) and out.dtype == torch.bfloat16


def test_update_takes_the_codes_targets_not_the_old_files(tiny_base, tmp_path):
    """`--update` keeps the old file's other sections but not its targets: a target added since
    (the window head's) must be there for the doc."""
    from dsa.bench.run import TARGETS

    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"targets": {"guard_overhead": {"plr": 1.01}}, "guard_overhead": {}}))
    cfg = BenchConfig.quick(lengths=(16,), batches=(1,), sections=("guard",), generative_tokens=2, guards_dir=None,
                            update=True, out=str(out), doc=str(tmp_path / "bench.md"))
    res = run_bench(cfg, base=tiny_base, log=lambda *_: None)
    assert res["targets"] == TARGETS
