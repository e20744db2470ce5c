"""Offline NLTK `punkt_tab` (English) for the IFEval checkers.

lm-eval's IFEval checkers count sentences with NLTK's Punkt model (`tokenizers/punkt_tab/english`),
which NLTK normally downloads from the internet at import time. Here it comes from PyPI instead:
the `llama-index-core` wheel ships NLTK's own punkt_tab data (MIT). We `pip download` that one
wheel (no install, no dependencies), check the four English files against the sha256 sums below
and copy them to `<venv>/nltk_data/tokenizers/punkt_tab/english/`, a folder on NLTK's default
search path. `scripts/setup.sh` calls `install_punkt()`; by hand:

    .venv/bin/python -m dsa.eval.punkt_data
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from dsa.adapter_io import atomic_write_text
from dsa.extras import needs_extra

WHEEL = "llama-index-core==0.14.25"  # downloaded, not installed (so not in the lock); FILES checks its data
_PREFIX = "llama_index/core/_static/nltk_cache/tokenizers/punkt_tab/"
FILES = {  # NLTK punkt_tab/english, as shipped in that wheel
    "english/abbrev_types.txt": "92a3e070f43d9b4c5534758ca40ad7343b04e7e29bfe0c2eb658a39445a4f779",
    "english/collocations.tab": "8e2da1225e4dd2cc9dba261ee231ccb134859e21b46006e7f472c5ee269af0cf",
    "english/ortho_context.tab": "4bbcca25ed3d3f06c02402abf8419b9f033b8adc06e7b482eca4e45f81a5dc4c",
    "english/sent_starters.txt": "f3f8535483e1dba487241b764945168123bca3209a9645e59acd1225dc76edac",
    "README": "d3251cae66a9359bd68c039e3a46172a05ca9df0b27dcdfa23ae594d68d27ec4",
}


def default_root() -> Path:
    """`<sys.prefix>/nltk_data`: on NLTK's search path for this interpreter (the venv)."""
    return Path(sys.prefix) / "nltk_data"


def punkt_available() -> bool:
    """True when NLTK can find the English punkt_tab model (anywhere on its search path)."""
    with needs_extra("eval", "IFEval checking (NLTK)"):
        import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return True
    except LookupError:
        return False


def install_punkt(root: str | Path | None = None, wheel_dir: str | Path | None = None) -> Path:
    """Put punkt_tab/english under `root` (default: the venv's nltk_data); returns its folder.

    Args:
        root: an NLTK data folder.
        wheel_dir: a folder already holding the llama-index-core wheel (else `pip download`).
    """
    target = Path(root or default_root()) / "tokenizers" / "punkt_tab"
    if all(_sha(target / name) == digest for name, digest in FILES.items()):
        return target / "english"
    with tempfile.TemporaryDirectory() as tmp:
        if wheel_dir is None:
            # -qq: errors only (a machine's pip configuration can name index folders that do not exist,
            # which pip reports as warnings on a user's first screen)
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--quiet", "--no-deps",
                            "--disable-pip-version-check", "-d", tmp, WHEEL], check=True)
            wheel_dir = tmp
        wheels = sorted(Path(wheel_dir).glob("llama_index_core-*.whl"))
        if not wheels:
            raise FileNotFoundError(f"no llama_index_core wheel in {wheel_dir}")
        with zipfile.ZipFile(wheels[-1]) as z:
            for name, digest in FILES.items():
                data = z.read(_PREFIX + name)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise RuntimeError(f"{wheels[-1].name}: {name} does not match the expected sha256")
                atomic_write_text(target / name, data.decode("utf-8"))
    return target / "english"


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


if __name__ == "__main__":
    print("NLTK punkt_tab (english) at", install_punkt())
