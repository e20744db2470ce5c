"""The shared datasets for tests that read them: a skip when absent, a failure under
DSA_REQUIRE_DATA=1 (CI sets it in .ci/run, so a green run means the data tests ran)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRE = "DSA_REQUIRE_DATA"


def require_data(why: str = "") -> Path:
    """`dsa.data.data_dir()`, or skip the calling test when the shared datasets are absent (fail
    it when DSA_REQUIRE_DATA=1). `why` says what the test needs them for."""
    from dsa.data import DataError, data_dir

    try:
        return data_dir()
    except DataError as err:
        missing(f"shared datasets not available{f', {why}' if why else ''} ({err})")


def missing(message: str):
    """Skip with `message`, or fail with it under DSA_REQUIRE_DATA=1."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{message} [{REQUIRE}=1: missing data is a failure]", pytrace=False)
    pytest.skip(message)
