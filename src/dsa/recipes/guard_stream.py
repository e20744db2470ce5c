"""`dsa guard calibrate-stream`: a response guard's streaming stop rule, calibrated on the prefixes
the runtime reads (`dsa.guards.streaming`) and stored in the adapter.

    stream = calibrate_adapter(base, "adapters/guards/response_harm", guard_task("response_harm").val,
                               benign=base_answers(base, benign_prompts("val", 300)))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dsa.adapter_io import update_adapter_config
from dsa.data.records import Record
from dsa.guards.bank import KIND, GuardAdapter, GuardBank
from dsa.guards.streaming import calibrate, read_answers


def calibrate_adapter(base, path, records, target_fpr: float = 0.03, max_response_tokens: int = 256,
                      source: str = "", benign: Sequence[Record] = (), benign_source: str = "",
                      progress: Callable[[int], None] | None = None) -> dict:
    """Calibrate every head of the response guard at `path` on labelled (prompt, response)
    `records` (a validation split: never the test split), and on `benign` safe records (the
    base's own answers to benign validation prompts, `base_answers`) held to the target apart;
    store the rules in the adapter (`config["stream"]`, covered by its checksum). Returns the
    stored dict: {"rules": [per head], "target_fpr", "source", "benign_source", "max_response_tokens",
    "answers", "val": {head: operating point}}."""
    adapter = GuardAdapter.load(path, base.fingerprint, base.d_model)
    if adapter.mode != "prompt_response":
        raise ValueError(f"{path}: a {adapter.mode!r} guard reads prompts; only a prompt_response guard "
                         "reads answers while they are decoded")
    adapter.stream = None  # read as stored; an earlier rule does not change the scores
    bank = GuardBank([adapter])
    answers = read_answers(base, bank, records, max_response_tokens, progress=progress, group=source)
    answers += read_answers(base, bank, benign, max_response_tokens, progress=progress, group=benign_source)
    rules, val = [], {}
    for head in bank.heads:
        rule, point, _ = calibrate(answers, head, target_fpr)
        rules.append(rule.as_dict())
        val[head] = point
    stream = {"rules": rules, "target_fpr": target_fpr, "source": source, "benign_source": benign_source,
              "max_response_tokens": max_response_tokens, "answers": len(answers), "val": val}
    update_adapter_config(path, {"stream": stream}, kind=KIND)
    return stream
