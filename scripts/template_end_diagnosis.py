"""Does the prompt guard read the request, or the chat template's end after it? Writes
results/robustness-template-end.json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/template_end_diagnosis.py [--guard adapters/guards/prompt_safety] [--n 100]

A window head's score is the best window of per-token read-outs. On prompt_safety's val prompts
(not eval-only sets; nothing is fitted here) this measures, per class: the flag rate as shipped;
the share of prompts whose best window covers the tokens the chat template adds after the user's
text (`<|im_end|>\\n<|im_start|>assistant\\n` on the embedded base); the flag rate when windows may
not touch those tokens (the request's own tokens only); and the flag rate of the
`inject_template` encoding (typed template text after the request, read as plain text since the
runtime normalises it), which moves the real template end away from the request. Scores are the
runtime's (`SafetyModel.classify`); the restricted read-out recomputes the same head on the same
states with the template tail masked.
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    import torch

    from dsa.adapter_io import atomic_write_text, weights_hash
    from dsa.data import guard_task
    from dsa.data.wrappers import inject_template
    from dsa.features.text import encode_inputs, template_tail_tokens
    from dsa.guards.heads import rolling_max
    from dsa.runtime import SafetyModel

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guard", default="adapters/guards/prompt_safety")
    p.add_argument("--n", type=int, default=100, help="val prompts per class (a fixed stride over the split)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "robustness-template-end.json")
    args = p.parse_args()
    t0 = time.perf_counter()
    sm = SafetyModel.load(guards=[args.guard])
    base, ad = sm.base, sm.guards.adapters[0]
    if ad.arch != "window":
        raise SystemExit(f"{args.guard}: arch {ad.arch!r}; this diagnosis reads a window head's windows")
    q, thr, head = ad.qualified[0], ad.thresholds[0], ad.head
    val = guard_task(ad.task).split("val")
    tail = template_tail_tokens(base)  # what the template adds after any user text

    def restricted(prompt: str) -> tuple[float, bool]:
        """(probability with windows inside the user's text only, whether the best window covers the tail)."""
        ids = encode_inputs(base, [prompt], ad.max_length)[0]
        with torch.inference_mode():
            out = base.model(torch.tensor([ids]), output_hidden_states=True)
            z = head.token_logits({li: out.hidden_states[li + 1] for li in head.layers})
            full = torch.ones(1, len(ids))
            body = full.clone()
            body[0, len(ids) - tail:] = 0
            best_full = rolling_max(z, full, head.window)
            best_body = rolling_max(z, body, head.window)
            prob = ad.probs(best_body + head.net.bias)[0, 0].item()
        return prob, bool((best_full > best_body)[0, 0])

    result = {"command": "python scripts/template_end_diagnosis.py" + (
        f" --guard {args.guard}" if args.guard != p.get_default("guard") else "") + (
        f" --n {args.n}" if args.n != p.get_default("n") else ""),
        "adapter": args.guard, "weights_sha256": weights_hash(args.guard), "head": q, "threshold": thr,
        "set": f"{ad.task} val", "classes": {}}
    for label, name in ((1, "harmful"), (0, "benign")):
        prompts = [r.prompt for r in val if r.label == label and r.prompt]
        prompts = prompts[:: max(1, len(prompts) // args.n)][: args.n]
        plain = [r["scores"][q] for r in sm.classify(prompts)]
        injected = [r["scores"][q] for r in sm.classify([inject_template(x) for x in prompts])]
        body = [restricted(x) for x in prompts]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        row = {"n": len(prompts),
               "flagged_plain": mean([s >= thr for s in plain]),
               "best_window_covers_template_end": mean([c for _, c in body]),
               "flagged_request_tokens_only": mean([b >= thr for b, _ in body]),
               "flagged_inject_template": mean([s >= thr for s in injected]),
               "mean_score_plain": mean(plain), "mean_score_request_tokens_only": mean([b for b, _ in body]),
               "mean_score_inject_template": mean(injected)}
        result["classes"][name] = row
        print(name, json.dumps(row), flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
