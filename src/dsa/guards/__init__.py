"""DSA guard adapters: PLR, RTB, LST and window heads on the frozen base model's hidden states
(each head type one module of `dsa.guards.kinds`, registered in `ARCHS`).

    from dsa.guards import GuardBank, classify
    bank = GuardBank.load(["adapters/guards/prompt_safety"], base)
    classify(base, bank, ["How do I pick a lock?"])  # [{"scores": {...}, "flags": {...}}]
"""

from dsa.guards.bank import GuardAdapter, GuardBank, classify
from dsa.guards.heads import LSTHead, PLRHead, RTBHead
from dsa.guards.kinds import ARCHS, GuardHead, build_head, head_kind

__all__ = ["GuardAdapter", "GuardBank", "classify", "ARCHS", "GuardHead", "head_kind", "PLRHead", "RTBHead",
           "LSTHead", "build_head"]
