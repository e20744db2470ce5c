"""One plain vLLM engine, then one dsa engine, per test session (eager, bf16, one thread).

Run in .venv-vllm: `.venv-vllm/bin/pytest -m vllm --confcutdir=tests/vllm tests/vllm` (scripts/test.sh
does). The HF runtime's reference values come from the main venv (`dsa.vllm.reference`).
"""

from __future__ import annotations

import os

import pytest

from tests.shared_data import missing

PARITY_TOKENS = 8
REQUESTED = (0.0, 0.5, 1.0)  # the floors the mixed-λ test cycles through

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


@pytest.fixture(scope="session")
def ref() -> dict:
    """Parity prompts with the HF runtime's token ids, guard scores and policy λ."""
    from dsa.vllm import parity

    try:
        return parity.reference("prompts")
    except RuntimeError as err:
        if "no dataset folder" in str(err):
            missing("the shared data folder (StrongREJECT, XSTest) is not available: set DSA_DATA")
        raise


@pytest.fixture(scope="session")
def base_dir() -> str:
    from dsa.base import resolve_base_path

    return resolve_base_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def plain_rows(ref, base_dir) -> list[dict]:
    from dsa.vllm import parity

    return parity.plain_run(base_dir, ref["prompt_ids"], PARITY_TOKENS)


@pytest.fixture(scope="session")
def sm(plain_rows):  # after the plain engine has stopped: one engine at a time
    from dsa.vllm import parity
    from dsa.vllm.llm import VllmSafetyModel

    opts = {k: v for k, v in parity.ENGINE.items() if k not in ("dtype", "enforce_eager", "enable_prefix_caching")}
    model = VllmSafetyModel(**opts)
    yield model
    model.close()


@pytest.fixture(scope="session")
def runs(sm, ref) -> dict:
    """Generations of the parity prompts: "auto", each uniform floor, and a batch mixing the floors."""
    from dsa.vllm import parity

    ids = ref["prompt_ids"]
    go = dict(max_new_tokens=PARITY_TOKENS, ignore_eos=True, logprobs=parity.TOP_K)
    out = {"auto": sm.generate(ids, alignment="auto", **go)}
    for r in REQUESTED[1:]:
        out[r] = sm.generate(ids, alignment=r, **go)
    out["mixed"] = sm.generate(ids, alignment=[REQUESTED[i % len(REQUESTED)] for i in range(len(ids))], **go)
    return out
