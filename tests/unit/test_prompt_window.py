"""`PromptWindow` (a window head's state over a prompt read in chunks) against `rolling_max` on
the whole prompt (the state vLLM's engine and `dsa.chunked_prefill` keep of a window head)."""

from __future__ import annotations

import random

import pytest
import torch

from dsa.guards.heads import rolling_max
from dsa.guards.prompt_window import PromptWindow


def _chunked(z: torch.Tensor, window: int, cuts: list[int]) -> torch.Tensor:
    state = PromptWindow(window)
    for a, b in zip([0, *cuts], [*cuts, z.shape[0]], strict=True):
        state.extend(z[a:b])
    assert state.count == z.shape[0]
    return state.best


@pytest.mark.parametrize("window", [1, 3, 8])
@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 23])
def test_any_chunking_gives_the_whole_prompt_score(window, length):
    rng = random.Random(window * 100 + length)
    z = torch.randn(length, 2, generator=torch.Generator().manual_seed(rng.randrange(1 << 30))) * 3
    want = rolling_max(z[None], torch.ones(1, length), window)[0]
    for n_cuts in range(min(6, length)):
        cuts = sorted(rng.sample(range(1, length), n_cuts))
        assert torch.allclose(_chunked(z, window, cuts), want, atol=1e-5), (cuts, window, length)
    assert torch.allclose(_chunked(z, window, list(range(1, length))), want, atol=1e-5)  # one token at a time


def test_a_short_prompt_is_its_own_window_and_a_late_peak_wins():
    z = torch.tensor([[1.0], [2.0], [3.0]])
    assert _chunked(z, 8, [1]).item() == pytest.approx(2.0)  # shorter than the window: the mean of all
    z = torch.cat([torch.full((10, 1), -1.0), torch.full((4, 1), 5.0)])
    assert _chunked(z, 4, [3, 11]).item() == pytest.approx(5.0)  # the last window alone holds the peak
