"""docs/data.md's generated blocks, written by `dsa data doc` from the code and the shared data:
the split rule (from the constants that implement it), the guard tasks (counts per split, where
their rows come from) and every source and task as `dsa data list` prints them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from dsa.data.contrast import SOURCE as CONTRAST_SOURCE
from dsa.data.contrast import contrast_records
from dsa.data.records import Record
from dsa.data.sources import OPENAI_MODERATION_HEADS, data_dir, list_sources, load_source
from dsa.data.splits import (
    DEFAULT_FRACTIONS,
    EVAL_ONLY_SOURCES,
    NEAR_JACCARD,
    NEAR_SHARE,
    SHINGLE,
    SPLITS,
    compared_text,
    dedup_key,
    deduplicate,
    eval_key,
    eval_only_texts,
)
from dsa.data.tasks import (
    FRAMED_SHARE,
    GUARD_TASKS,
    NOT_HARMFUL_REQUESTS,
    QUESTION_EVAL_CAP,
    benign_prompts,
    guard_task,
    harmful_prompts,
    prompt_safety_inputs,
    prompt_source,
)
from dsa.docblock import splice_block

DOC = Path("docs/data.md")
TITLE = "# Data: sources, guard tasks and fixed splits"
COMMAND = "dsa data doc"
BLOCKS = ("split-rule", "guard-tasks", "sources")
SPLIT_COLUMNS = ("train", "val", "test", "eval", None)
ALPACA = "alpaca_instructions"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- data:{name}:start (written by `{COMMAND}`) -->", f"<!-- data:{name}:end -->"


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned table: text left-aligned, numbers right-aligned."""
    cells = [[str(c) for c in header], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def balance(records: Sequence[Record]) -> tuple[int, int, int]:
    """(label 1, label 0, no label) counts."""
    c = Counter(r.label for r in records)
    return c[1], c[0], c[None]


def pct(pos: int, neg: int) -> str:
    return f"{100 * pos / (pos + neg):.1f}%" if pos + neg else "-"


def list_table(root: str | Path | None = None, seed: int = 0) -> str:
    """`dsa data list`: every source and guard task with rows per split and label balance."""
    rows = []
    for kind, name in [*(("source", s) for s in list_sources()), *(("task", t) for t in GUARD_TASKS)]:
        if kind == "task":
            t = guard_task(name, root, seed)
            records = [*t.train, *t.val, *t.test]
        else:
            records = load_source(name, root)
        splits = Counter(r.split for r in records)
        pos, neg, unk = balance(records)
        rows.append([name, kind, len(records), *(splits[s] or None for s in SPLIT_COLUMNS), pos, neg, unk,
                     pct(pos, neg)])
    return format_table(["name", "kind", "rows", "train", "val", "test", "eval", "no split",
                         "label=1", "label=0", "no label", "% label=1"], rows)


def split_rule_lines(seed: int = 0) -> list[str]:
    """The split rule, every number from the constants of `dsa.data.splits`."""
    tr, va, te = DEFAULT_FRACTIONS
    return [
        f"- **Seed {seed}, fractions train/val/test = {tr:.2f} / {va:.2f} / {te:.2f}.**",
        f"- A record's split is `sha256(f\"{{seed}}:{{group or id}}\")` mapped to [0, 1): below {tr:g} → train, "
        f"below {tr + va:g} → val, else test. Ids come from upstream ids or from a hash of the normalised "
        "content, so adding, removing or reordering rows never moves an existing record.",
        "- Groups that must not straddle splits: SummEdits by document, response_harm by question text.",
        "- `alpaca_instructions` keeps its official `harmless_{train,val,test}.json` files as splits.",
        "- Before splitting, every training set loses the texts that are in an eval-only set ("
        + ", ".join(f"`{s}`" for s in EVAL_ONLY_SOURCES) + "; every MT-Bench turn) by "
        "`dsa.data.splits.EvalIndex`: a prompt (or text) is compared as its words (NFKC, lower case, letters "
        "and digits only: quotes, punctuation, width and spacing never tell two prompts apart) and dropped "
        f"when they equal an eval-only text's, when at least {NEAR_SHARE:g} of its {SHINGLE}-word shingles lie "
        f"inside one eval-only text (a prompt cut from an eval prompt), or when its word set has a Jaccard "
        f"similarity of at least {NEAR_JACCARD:g} with one (the same template with another slot). Then repeats "
        "within the set are dropped (first occurrence wins; prompt and text tasks compare the same words, "
        "SummEdits and response_harm every field lower-cased with whitespace folded); in prompt_safety harmful "
        "sources come first, so a prompt is never both harmful and benign.",
        "- Labels: 1 is always the class a guard flags (unsafe, toxic, harmful, **inconsistent** summary).",
    ]


def _labelled(records: Sequence[Record]) -> str:
    pos, neg, _ = balance(records)
    return f"{pos}/{pos + neg}" if records else "-"


def tasks_table(tasks: dict) -> list[str]:
    lines = ["| task | mode | heads | train | val | test | label=1 / labelled rows (train / val / test) |",
             "|---|---|---|---|---|---|---|"]
    for name, t in tasks.items():
        test = f"{len(t.test)} (eval only)" if t.eval_only else str(len(t.test))
        lines.append(f"| {name} | {t.mode} | {', '.join(t.heads)} | {len(t.train)} | {len(t.val)} | {test} | "
                     + " / ".join(_labelled(t.split(s)) for s in SPLITS) + " |")
    return lines


def _dropped(records: list[Record], against, key=dedup_key) -> tuple[int, int]:
    """(eval-only overlaps, repeats) that `deduplicate(records, against, key)` drops."""
    rest = [r for r in records if compared_text(r) not in against]
    return len(records) - len(rest), len(rest) - len(deduplicate(rest, key=key))


def _n(x: int) -> str:
    return f"{x:,}"


def _row_key(r: Record) -> str:
    """prompt_safety's table row of a record: its `prompt_source`, the contrast prompts by label."""
    if r.source == CONTRAST_SOURCE:
        return f"{r.source} ({'harmful' if r.label == 1 else 'benign'})"
    return prompt_source(r)


def _input_key(r: Record) -> str:
    return ALPACA if r.source == ALPACA else _row_key(r)  # Alpaca as loaded, before it is sampled


def prompt_safety_table(task, root: str, seed: int, against) -> list[str]:
    """Where prompt_safety's rows come from: per source, rows loaded, dropped as eval-only overlaps or
    repeats, and kept per split."""
    inputs, contrast = prompt_safety_inputs(root), contrast_records(seed)
    loaded = Counter(_input_key(r) for r in [*inputs, *contrast])
    label = {_input_key(r): r.label for r in [*inputs, *contrast]}
    clean = [[r for r in rs if compared_text(r) not in against] for rs in (inputs, contrast)]
    overlap = loaded - Counter(_input_key(r) for rs in clean for r in rs)
    kept = Counter(_input_key(r) for rs in clean for r in deduplicate(rs, key=eval_key))
    rows = [r for s in SPLITS for r in task.split(s)]
    in_task = Counter((("framed copies" if r.meta.get("framed_from") else _row_key(r)), r.split) for r in rows)

    def counts(k: str) -> str:
        return f"{_n(loaded[k])} | {overlap[k]} | {loaded[k] - overlap[k] - kept[k]}"

    def splits(k: str) -> str:
        return " | ".join(_n(in_task[k, s]) for s in SPLITS)

    lines = ["| source | label | loaded | eval-only overlaps | repeats | train | val | test |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {label[k]} | {counts(k)} | {splits(k)} |" for k in loaded if k != ALPACA]
    lines.append(f"| {ALPACA} (sampled below) | 0 | {counts(ALPACA)} | | | |")
    for k, what in (("alpaca_hard", "every instruction of the split that uses a harm word"),
                    ("alpaca_question", f"questions: all of train, {QUESTION_EVAL_CAP} of val and of test"),
                    ("alpaca", "plain, half as many as the split's sourced harmful prompts")):
        lines.append(f"| {k} ({what}) | 0 | | | | {splits(k)} |")
    framed = {r.label for r in rows if r.meta.get("framed_from")}
    lines.append(f"| framed copies (of a seeded {FRAMED_SHARE * 100:g} % of the train prompts) | "
                 f"{' and '.join(str(x) for x in sorted(framed, reverse=True))} | | | | {splits('framed copies')} |")
    lines.append("| **total** | | | | | " + " | ".join(f"**{_n(len(task.split(s)))}**" for s in SPLITS) + " |")
    return lines


def prompt_safety_note(root: str) -> str:
    dna = load_source("do_not_answer", root)
    human = sum(r.meta.get("types_of_harm") in NOT_HARMFUL_REQUESTS for r in dna)
    return ("- **prompt_safety** — harmful requests (AdvBench behaviours, HarmfulQA, CatQA-English, DangerousQA, "
            "AdversarialQA, Do-Not-Answer questions, ToxicChat toxic prompts) against benign ones (CoCoNot "
            "preference prompts, PHTest `harmless`, WildChat benign, OpenAI-moderation prompts with no flag, and "
            "Alpaca instructions of the same official split), plus the project's contrast prompts "
            "(`dsa.data.contrast`: harm words in benign and harmful senses, their own seeded splits). Left out "
            f"before anything else: the {human} Do-Not-Answer questions of "
            + ", ".join(f'"{h}"' for h in sorted(NOT_HARMFUL_REQUESTS)) + " (\"Are you human?\": not harmful "
            "requests), PHTest `controversial` and OpenAI-moderation prompts with a flag or an unannotated "
            "category. Alpaca supplies **hard negatives** (every instruction of the split that uses a harm "
            "word: `SENSITIVE_WORDS` in `dsa/data/tasks.py`, `meta[\"hard_negative\"]`, such as \"What is the "
            "most effective way to protect your computer from being hacked?\"; without them a guard learns "
            "\"harm word ⇒ unsafe\"), benign questions (`meta[\"question_negative\"]`: most harmful prompts are "
            f"questions) and a plain sample. A seeded {FRAMED_SHARE * 100:g} % of the training prompts of both "
            "classes also get a framed copy (a train wrapper family of `dsa.data.wrappers`), so a framing is "
            "never a label cue; val and test are never framed. Where the rows come from (repeats: dropped as "
            "the same words as an earlier row, harmful sources first):")


def task_notes(tasks: dict, root: str, seed: int) -> list[str]:
    """What each task is, every count computed here."""
    against = eval_only_texts(root)
    out = ["What each task is:", ""]

    tox = load_source("toxigen", root)
    raw = load_source("toxigen", root, keep_unsure=True)
    pos, neg, _ = balance(tox)
    ov, rep = _dropped(tox, against, eval_key)
    out.append(f"- **toxigen** — ToxiGen human-annotated set ({_n(len(raw))} rows): `toxicity_human` ≥ 4 → 1 "
               f"({_n(pos)}), ≤ 2 → 0 ({_n(neg)}), the {_n(len(raw) - len(tox))} rows in between dropped; then "
               f"{ov} eval-only overlaps and {rep} repeats dropped.")

    se = load_source("summedits", root)
    t = tasks["summedits"]
    docs = {s: len({r.meta["doc_id"] for r in t.split(s)}) for s in SPLITS}
    out.append(f"- **summedits** — all {len({r.meta['domain'] for r in se})} domain files ({_n(len(se))} pairs, "
               f"{len(se) - sum(len(t.split(s)) for s in SPLITS)} exact repeats dropped); label 1 = inconsistent "
               "summary (the source's own label is 1 = consistent; `load_source(\"summedits\")` keeps that). Split "
               f"grouped by document ({_n(sum(docs.values()))} documents: "
               + " / ".join(f"{docs[s]} {s}" for s in SPLITS) + ").")

    out += [prompt_safety_note(root), "", *prompt_safety_table(tasks["prompt_safety"], root, seed, against), ""]

    dnr = load_source("do_not_answer_responses", root)
    pos, neg, _ = balance(dnr)
    ov, rep = _dropped(dnr, against)
    qs = {r.meta["question_id"] for r in dnr if compared_text(r) in against}
    out.append(f"- **response_harm** — Do-Not-Answer: {_n(len({r.meta['question_id'] for r in dnr}))} questions × "
               f"{len({r.meta['model'] for r in dnr})} models' responses, human `<model>_harmful` label (only "
               f"{100 * pos / (pos + neg):.1f} % harmful); the {ov} responses to {len(qs)} questions that are in an "
               f"eval-only set dropped{f', and {rep} repeats' if rep else ''}; split grouped by question.")

    om = load_source("openai_moderation", root)
    t = tasks["openai_moderation"]
    ov, rep = _dropped(om, against, eval_key)
    unknown = sum(r.label is None for s in SPLITS for r in t.split(s))
    out.append(f"- **openai_moderation** — {_n(len(om))} samples ({ov} eval-only overlaps and {rep} repeats "
               f"dropped); heads {', '.join(OPENAI_MODERATION_HEADS)} and `any`. Unannotated categories are `None` "
               f"(mask them in the loss); `any` = 1 if any flag is 1, 0 only if all {len(OPENAI_MODERATION_HEADS)} "
               f"are annotated 0, else None ({unknown} rows; the table above counts only rows where `any` is known).")

    xs = tasks["xstest"].test
    pos, neg, _ = balance(xs)
    out.append(f"- **xstest** — the {len(xs)} XSTest prompts ({pos} unsafe, {neg} safe), evaluation only (label 1 "
               "= unsafe prompt). Train on prompt_safety, evaluate here (over-refusal = safe prompts flagged).")
    return [*out, ""]


def per_head_table(task) -> list[str]:
    groups = [(s, task.split(s)) for s in SPLITS]
    rows = [[h, *(f"{sum(r.labels.get(h) == 1 for r in rs)}/{sum(r.labels.get(h) is not None for r in rs)}"
                  for _, rs in groups)] for h in task.heads]
    return ["```", format_table(["head", *SPLITS], rows), "```"]


def guard_tasks_lines(root: str, seed: int) -> list[str]:
    tasks = {name: guard_task(name, root, seed) for name in GUARD_TASKS}
    harmful = {s: len(harmful_prompts(s, root, seed)) for s in SPLITS}
    benign = {s: len(benign_prompts(s, root)) for s in SPLITS}
    return [*tasks_table(tasks), "", *task_notes(tasks, root, seed),
            "openai_moderation per head, positives / annotated (`dsa data show openai_moderation --n 0`):", "",
            *per_head_table(tasks["openai_moderation"]), "",
            "Alignment prompt sets: `harmful_prompts(split)` = the prompt_safety positives of that split ("
            + " / ".join(f"{s} {_n(harmful[s])}" for s in SPLITS) + "); `benign_prompts(split)` = every Alpaca "
            "instruction of that official split file minus eval-only overlaps and repeats ("
            + " / ".join(f"{s} {_n(benign[s])}" for s in SPLITS) + ")."]


def write_data_doc(doc: Path = DOC, root: str | Path | None = None, seed: int = 0) -> Path:
    """Rewrite the generated blocks of `doc` (see BLOCKS); the hand-written text around them stays."""
    root = str(Path(root) if root is not None else data_dir())
    bodies = {"split-rule": split_rule_lines(seed),
              "guard-tasks": guard_tasks_lines(root, seed),
              "sources": ["```", list_table(root, seed), "```"]}
    for name in BLOCKS:
        start, end = markers(name)
        splice_block(Path(doc), [start, *bodies[name], end], start, end, TITLE)
    return Path(doc)
