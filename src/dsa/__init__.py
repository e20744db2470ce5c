"""dsa — Disentangled Safety Adapters: guardrails and tunable alignment that read a chat LLM's
own hidden states, so one forward pass serves the answer, the guard scores and the alignment."""

from dsa.base import DEFAULT_BASE, Base, fingerprint, load_base
from dsa.features import extract_features
from dsa.taps import record_taps, resolve_taps, run_with_taps

__version__ = "0.1.0"

__all__ = ["DEFAULT_BASE", "Base", "fingerprint", "load_base", "extract_features",
           "record_taps", "resolve_taps", "run_with_taps", "__version__"]
