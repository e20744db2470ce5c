"""`dsa data list|show` print aligned tables (on the real data; skipped when absent)."""

import argparse

from dsa.cli import data_cmd
from tests.shared_data import require_data


def run(argv):
    parser = argparse.ArgumentParser(prog="dsa")
    data_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_format_table_aligns_numbers():
    out = data_cmd.format_table(["name", "rows"], [["a", 5], ["bbb", 1234]]).splitlines()
    assert out == ["name  rows", "----  ----", "a        5", "bbb   1234"]


def test_show_and_list(capsys):
    require_data()
    assert run(["data", "show", "xstest", "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "xstest (task): 450 rows" in out and "eval" in out
    assert run(["data", "show", "source:toxigen", "--n", "1"]) == 0
    assert "2307" in capsys.readouterr().out
    assert run(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "prompt_safety" in out and "gsm8k" in out
