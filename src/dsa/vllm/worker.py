"""Worker extension: the caller's route to the guard scores and λ the model computed.

    LLM(..., worker_extension_cls="dsa.vllm.worker.DSAWorkerExtension")
    llm.collective_rpc("dsa_pop_results", args=(keys,))  # one dict per worker; rank 0's is used

Requests name themselves with `extra_args["dsa_request_key"]`; results are popped once read.
"""

from __future__ import annotations

from dsa.vllm.rows import ROWS


class DSAWorkerExtension:
    def dsa_pop_results(self, keys: list[str]) -> dict[str, dict | None]:
        """{key: {"guard_scores": {head: score}, "lam": λ} or None when unknown} for each key."""
        return ROWS.pop_results(list(keys))
