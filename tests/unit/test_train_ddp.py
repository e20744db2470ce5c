"""Two processes under `accelerate launch` (CPU, gloo on loopback) train like one process.

`dsa.train.check_processes` launches `python -m dsa.train.smoke` (an RTB guard head trained with
`dsa.guards.train.fit_torch` on seeded synthetic features, batches of 8 split 4 + 4) and reads back
every rank's trained parameters.
"""

from __future__ import annotations

from dsa.train import check_processes
from dsa.train.smoke import run


def test_two_processes_are_synchronised_and_match_one_process():
    res = check_processes(2)
    assert res["accelerate_processes"] == 2 and res["world_sizes"] == [2]
    assert res["distributed_type"].endswith("MULTI_CPU")
    assert res["params_equal_across_ranks"] is True  # DDP averaged the same gradients everywhere
    assert res["max_abs_diff_vs_one_process"] < 1e-5  # same global batches as one process


def test_smoke_job_alone_is_one_process():
    res = run(epochs=1)
    assert (res["rank"], res["world"]) == (0, 1) and len(res["params"]) > 0
