"""Operator settings of the server: limits, the alignment policy, API keys."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path

PERMISSIONS = ("override", "scores")
UNVALIDATED_LANGUAGE_RULES = ("flag", "refuse", "allow")  # = dsa.guards.language.RULES (no torch import here)


@dataclass(frozen=True)
class ApiKey:
    """A client key. Permissions: "override" may set λ below the guard policy; "scores" sees raw
    guard scores."""

    name: str
    digest: str  # sha256 of the key: the secret itself is not kept in memory after loading
    permissions: frozenset[str] = frozenset()


def load_api_keys(path: str | Path) -> list[ApiKey]:
    """Read `[{"key": "...", "name": "...", "permissions": ["override", "scores"]}, ...]` (JSON)."""
    path = Path(path)
    try:
        items = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read API keys: {err}") from err
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty JSON list of {{key, name, permissions}}")
    keys = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or len(item["key"]) < 16:
            raise ValueError(f"{path}: entry {i} needs a \"key\" string of at least 16 characters")
        perms = item.get("permissions", [])
        bad = [p for p in perms if p not in PERMISSIONS]
        if bad:
            raise ValueError(f"{path}: entry {i} has unknown permissions {bad}; known are {list(PERMISSIONS)}")
        keys.append(ApiKey(str(item.get("name", f"key{i}")), _digest(item["key"]), frozenset(perms)))
    return keys


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ServerConfig:
    """Everything an operator sets; the defaults are the safe ones."""

    model_name: str | None = None
    api_keys: list[ApiKey] = field(default_factory=list)  # empty: no auth, and no client may override λ
    allow_unguarded: bool = False  # serve without a prompt guard or an alignment adapter
    expose_scores: bool = False  # raw guard scores to every client (else only to keys with "scores")
    max_prompt_tokens: int = 4096
    default_max_tokens: int = 256
    max_body_bytes: int = 1_000_000
    max_moderation_inputs: int = 32
    max_queue: int = 64  # waiting requests; more get 429
    max_batch: int = 16  # rows decoded together
    batch_window_s: float = 0.005  # an idle worker waits this long for more requests to batch
    # prompt tokens read per worker iteration, between two decode steps (chunked prefill); prompts
    # over half of it, and moderation inputs, are read in slices (hf engine; vLLM: max_num_batched_tokens)
    max_prefill_tokens: int = 128
    # cached tokens that double what a prompt token costs that budget (`dsa.chunked_prefill.read_cost`)
    prefill_attention_span: int = 1024
    max_stop: int = 4
    shutdown_grace_s: float = 5.0
    # a prompt in a language the guard was not validated on: "flag" (λ of a flagged prompt),
    # "refuse" (a refusal, nothing generated) or "allow"; None: the model's own rule ("flag")
    unvalidated_language: str | None = None

    def __post_init__(self) -> None:
        if self.max_prefill_tokens < 2:
            raise ValueError(f"max_prefill_tokens must be at least 2, got {self.max_prefill_tokens}")
        if self.prefill_attention_span < 1:
            raise ValueError(f"prefill_attention_span must be at least 1, got {self.prefill_attention_span}")
        if self.unvalidated_language not in (None, *UNVALIDATED_LANGUAGE_RULES):
            raise ValueError(f"unvalidated_language must be one of {list(UNVALIDATED_LANGUAGE_RULES)}, "
                             f"got {self.unvalidated_language!r}")

    def authenticate(self, header: str | None) -> ApiKey | None:
        """The key a bearer header names; None when the server has no keys. Raises PermissionError
        when keys are configured and the header is missing or wrong."""
        if not self.api_keys:
            return None
        if not header or not header.lower().startswith("bearer "):
            raise PermissionError("missing bearer API key (Authorization: Bearer KEY)")
        digest = _digest(header[7:].strip())
        for key in self.api_keys:
            if hmac.compare_digest(key.digest, digest):
                return key
        raise PermissionError("invalid API key")
