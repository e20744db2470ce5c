"""`dsa eval` argument errors, and the offline punkt_tab installer (from a wheel file, no network)."""

from __future__ import annotations

import zipfile

import pytest

from dsa.cli import main
from dsa.eval import punkt_data


@pytest.mark.parametrize("argv, message", [
    (["--alignment", "sometimes"], "--alignment"),
    (["--n", "0"], "--n"),
    (["--guards", "no/such/guard"], "no such adapter directory"),
])
def test_bad_utility_arguments_are_one_line_errors(argv, message, capsys):
    assert main(["eval", "utility", "--task", "ifeval", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_task_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "utility", "--task", "gsm8k"])
    assert "invalid choice" in capsys.readouterr().err


def _wheel(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(punkt_data._PREFIX + name, data)


def test_punkt_installer_checks_hashes(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels / "llama_index_core-0.0.0-py3-none-any.whl", {n: b"not punkt" for n in punkt_data.FILES})
    with pytest.raises(RuntimeError, match="sha256"):
        punkt_data.install_punkt(tmp_path / "nltk_data", wheel_dir=wheels)
    with pytest.raises(FileNotFoundError):
        punkt_data.install_punkt(tmp_path / "nltk_data", wheel_dir=tmp_path)


def test_punkt_installer_round_trip(tmp_path):
    installed = punkt_data.default_root() / "tokenizers" / "punkt_tab"
    if not all((installed / n).is_file() for n in punkt_data.FILES):
        pytest.skip("punkt_tab not installed in this environment (scripts/setup.sh installs it)")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels / "llama_index_core-0.0.0-py3-none-any.whl",
           {n: (installed / n).read_bytes() for n in punkt_data.FILES})
    target = punkt_data.install_punkt(tmp_path / "nltk_data", wheel_dir=wheels)
    assert target == tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in target.iterdir()) == sorted(n.split("/")[1] for n in punkt_data.FILES if "/" in n)
    # already there: nothing is downloaded (no wheel folder needed)
    assert punkt_data.install_punkt(tmp_path / "nltk_data", wheel_dir=tmp_path / "missing") == target
