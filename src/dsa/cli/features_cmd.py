"""`dsa features extract`: cache pooled or per-token hidden states of a dataset's texts (mean / last
of `resid_post` taps come from the feature store shared with guard training; see
`dsa.features.extract_features`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from dsa.base import load_base
from dsa.cli.common import add_base_args, parse_mapping, print_table
from dsa.data import Record, guard_task, load_source, load_user_file
from dsa.features import (
    POOLINGS,
    compare_throughput,
    extract_features,
    raw_forward_throughput,
    render_input,
)
from dsa.features.doc import DOC, RESULTS, TARGET, verdict, write_features_doc
from dsa.taps import resolve_taps


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="hidden-state feature cache").add_subparsers(dest="features_cmd", required=True)
    ex = p.add_parser("extract", help="extract features of a dataset into the cache")
    add_base_args(ex)
    src = ex.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="a guard task (see `dsa data list`)")
    src.add_argument("--source", help="a dataset source (see `dsa data list`)")
    src.add_argument("--file", help="your own CSV / JSONL / JSON / Parquet file")
    ex.add_argument("--map", action="append", metavar="FIELD=COLUMN", help="column mapping for --file")
    ex.add_argument("--split", default=None, help="only this split (train/val/test/eval)")
    ex.add_argument("--n", type=int, default=None, help="first N records only")
    ex.add_argument("--taps", default="resid_post:6:30:6,-1", help="taps or shorthand, comma separated")
    ex.add_argument("--pooling", default="mean", choices=POOLINGS)
    ex.add_argument("--max-length", type=int, default=512)
    ex.add_argument("--batch-tokens", type=int, default=8192)
    ex.add_argument("--chat", action="store_true", help="render prompts through the chat template")
    ex.add_argument("--cache-root", default=None,
                    help="feature store root (default $DSA_CACHE/guard_features, shared with guard training)")
    ex.add_argument("--compare-raw", action="store_true",
                    help="benchmark: feature extraction against the raw forward of the base on the same batches")
    ex.add_argument("--end-to-end", action="store_true",
                    help="with --compare-raw: also time a whole extraction into a fresh cache")
    ex.add_argument("--out", default=str(RESULTS), help=f"with --compare-raw: the results file (default {RESULTS})")
    ex.add_argument("--doc", default=str(DOC), help=f"with --compare-raw: the page to rewrite (default {DOC})")
    ex.set_defaults(func=run_extract)
    doc = p.add_parser("doc", help=f"rewrite the measured block of {DOC} from {RESULTS}")
    doc.add_argument("--results", default=str(RESULTS))
    doc.add_argument("--doc", default=str(DOC))
    doc.set_defaults(func=run_doc)


def _records(args: argparse.Namespace) -> list[Record]:
    if args.task:
        task = guard_task(args.task)
        recs = task.split(args.split) if args.split else task.train + task.val + task.test
    elif args.source:
        recs = [r for r in load_source(args.source) if args.split is None or r.split == args.split]
    else:
        recs = load_user_file(args.file, mapping=parse_mapping(args.map))
    return recs[: args.n] if args.n else recs


def record_text(base, r: Record, chat: bool) -> str:
    """How a record is shown to the base: through the chat template when asked."""
    kind = r.input_kind
    if kind == "prompt_response":
        return (render_input(base, [{"role": "user", "content": r.prompt},
                                    {"role": "assistant", "content": r.response}])
                if chat else f"{r.prompt}\n{r.response}")
    if kind == "document_summary":
        return f"Document:\n{r.document}\n\nSummary:\n{r.summary}"
    return render_input(base, r.main_text) if chat else r.main_text


def run_extract(args: argparse.Namespace) -> int:
    base = load_base(args.base, dtype=args.dtype, device=args.device)
    texts = [record_text(base, r, args.chat) for r in _records(args)]
    if not texts:
        raise ValueError("no records selected")
    kw = dict(max_length=args.max_length, batch_tokens=args.batch_tokens)
    print(f"{len(texts)} texts, base {base.name} ({base.fingerprint}, {base.dtype}), taps {args.taps}, "
          f"pooling {args.pooling}")
    if not args.compare_raw:
        feats = extract_features(base, texts, args.taps, args.pooling, cache_root=args.cache_root, **kw)
        s = feats.stats
        rate = f"{s['tokens_per_s']:.0f} tokens/s" if s["tokens_per_s"] else "all cached"
        print(f"computed {s['computed']} of {s['texts']} ({s['tokens']} tokens, {s['seconds']:.1f} s, {rate}; "
              f"{'feature store' if s['source'] == 'store' else 'feature cache'})")
        print_table([{"tap": t, "shape": list(v.shape)} for t, v in feats.values.items()])
        return 0

    # Benchmark: warm up, then raw and extraction forwards interleaved batch by batch (robust to
    # a machine whose load changes), then one full extraction into a fresh cache for the total.
    machine = _machine(base)
    raw_forward_throughput(base, texts[:64], progress=False, **kw)
    cmp = compare_throughput(base, texts, args.taps, args.pooling, **kw)
    taps = resolve_taps(args.taps, base.n_layers)
    print_table([
        {"run": "raw forward (decoder stack, no hooks)", "tokens": cmp["tokens"],
         "seconds": f"{cmp['raw_seconds']:.1f}", "tokens/s": f"{cmp['raw_tokens_per_s']:.0f}"},
        {"run": f"feature forward ({len(taps)} taps, {args.pooling} pooling)",
         "tokens": cmp["tokens"], "seconds": f"{cmp['features_seconds']:.1f}",
         "tokens/s": f"{cmp['features_tokens_per_s']:.0f}"},
    ])
    print(f"ratio feature / raw throughput = {cmp['ratio']:.3f}  (target >= {TARGET:.2f}: {verdict(cmp['ratio'])})",
          flush=True)
    res = {"command": "dsa " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "source": f"{'task' if args.task else 'source' if args.source else 'file'} "
                     f"{args.task or args.source or args.file}" + (f", split {args.split}" if args.split else ""),
           "texts": len(texts), "base": base.name, "taps": taps, "pooling": args.pooling,
           "max_length": args.max_length, "batch_tokens": args.batch_tokens, "machine": machine, "compare": cmp}
    if args.end_to_end:
        with tempfile.TemporaryDirectory() as tmp:
            s = extract_features(base, texts, args.taps, args.pooling, cache_root=tmp, **kw).stats
        print(f"extract_features end to end (tokenise, bucket, forward, write shards): {s['tokens']} tokens "
              f"in {s['seconds']:.1f} s = {s['tokens_per_s']:.0f} tokens/s")
        res["end_to_end"] = {k: s[k] for k in ("tokens", "seconds", "tokens_per_s")}
    res["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out} and {write_features_doc(out, Path(args.doc))}")
    return 0


def _machine(base) -> dict:
    from dsa.bench.system import machine

    return machine(str(base.device), base.dtype)


def run_doc(args: argparse.Namespace) -> int:
    print(f"wrote {write_features_doc(Path(args.results), Path(args.doc))}")
    return 0
