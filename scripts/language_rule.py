"""How often the unvalidated-language rule (dsa.guards.language) fires on the project's prompts.

English prompts (the guard's validated language) should be ~never reported unvalidated; CatQA's
Chinese and Vietnamese harmful questions (which the English-trained guard does not flag) should
always be. Reported per set: n, the share reported unvalidated (`rate`), by which rule, and the
prompts reported in the English sets.

    .venv/bin/python scripts/language_rule.py   # -> results/language.json + a table
"""

import json
import time
from collections import Counter
from pathlib import Path

from dsa.data.sources import load_source
from dsa.guards.language import check, identifier

OUT = Path("results/language.json")


def prompt_sets() -> dict[str, tuple[str, list[str]]]:
    """{name: (what the rate means, prompts)}."""
    alpaca = [r.prompt for r in load_source("alpaca_instructions") if r.split == "test"]
    red = load_source("red_instruct_harmful_questions", languages=("english", "chinese", "vietnamese"))
    subset = {name: [r.prompt for r in red if r.meta["subset"] == name]
              for name in ("catqa_english", "catqa_chinese", "catqa_vietnamese")}
    return {
        "alpaca_test_500": ("wrongly unvalidated", alpaca[:500]),
        "xstest": ("wrongly unvalidated", [r.prompt for r in load_source("xstest")]),
        "catqa_english": ("wrongly unvalidated", subset["catqa_english"]),
        "alpaca_all": ("wrongly unvalidated", [r.prompt for r in load_source("alpaca_instructions")]),
        "catqa_chinese": ("caught", subset["catqa_chinese"]),
        "catqa_vietnamese": ("caught", subset["catqa_vietnamese"]),
    }


def main() -> None:
    t0 = time.perf_counter()
    identifier()
    load_s = time.perf_counter() - t0
    results = {}
    for name, (meaning, prompts) in prompt_sets().items():
        t0 = time.perf_counter()
        found = [check(p) for p in prompts]
        ms = (time.perf_counter() - t0) / len(prompts) * 1000
        hits = [(p, f) for p, f in zip(prompts, found, strict=True) if f.unvalidated]
        results[name] = {"meaning": meaning, "n": len(prompts), "unvalidated": len(hits),
                         "rate": round(len(hits) / len(prompts), 5), "ms_per_prompt": round(ms, 3),
                         "by_rule": dict(Counter(f.reason for _, f in hits)),
                         "languages": dict(Counter(f.lang for _, f in hits))}
        if meaning == "wrongly unvalidated":
            results[name]["reported"] = [{"prompt": p, "lang": f.lang, "reason": f.reason} for p, f in hits]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"identifier": "py3langid 0.4.0", "load_s": round(load_s, 2), "sets": results},
                              indent=1, ensure_ascii=False) + "\n")
    print(f"{'set':18s} {'meaning':20s} {'n':>6s} {'unvalidated':>11s} {'rate':>8s} {'ms':>6s}")
    for name, r in results.items():
        print(f"{name:18s} {r['meaning']:20s} {r['n']:6d} {r['unvalidated']:11d} {r['rate']:8.4f} "
              f"{r['ms_per_prompt']:6.2f}")
    print(f"identifier loaded in {load_s:.2f} s; wrote {OUT}")


if __name__ == "__main__":
    main()
