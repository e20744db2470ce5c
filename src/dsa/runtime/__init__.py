"""The HF runtime: `SafetyModel`, guarded and context-aligned generation (`dsa.runtime.safety_model`).

    from dsa.runtime import SafetyModel

The names below were `dsa.runtime`'s when it was one module; they stay importable from here.
"""

from dsa.runtime.decode_loop import end_of_turn_ids
from dsa.runtime.policy_head import DEFAULT_POLICY_HEAD, policy_threshold, resolve_policy_head
from dsa.runtime.results import GenerationResult, StreamEvent
from dsa.runtime.safety_model import Messages, SafetyModel
from dsa.runtime.scopes import patch_strength

__all__ = ["DEFAULT_POLICY_HEAD", "GenerationResult", "Messages", "SafetyModel", "StreamEvent", "end_of_turn_ids",
           "patch_strength", "policy_threshold", "resolve_policy_head"]
