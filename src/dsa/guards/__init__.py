"""DSA guard adapters: PLR, RTB and LST heads on the frozen base model's hidden states.

    from dsa.guards import GuardBank, classify
    bank = GuardBank.load(["adapters/guards/prompt_safety"], base)
    classify(base, bank, ["How do I pick a lock?"])  # [{"scores": {...}, "flags": {...}}]
"""

from dsa.guards.bank import GuardAdapter, GuardBank, classify
from dsa.guards.heads import ARCHS, LSTHead, PLRHead, RTBHead, build_head

__all__ = ["GuardAdapter", "GuardBank", "classify", "ARCHS", "PLRHead", "RTBHead", "LSTHead", "build_head"]
