"""Every shipped guard config loads; unknown keys and bad values are rejected; overrides apply."""

from pathlib import Path

import pytest

from dsa.cli import build_parser
from dsa.guards.config import GuardTrainConfig

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("guard-*.yaml"))


def test_there_are_guard_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path):
    cfg = GuardTrainConfig.load(path)
    assert cfg.out.startswith("adapters/guards/")
    assert path.read_text().startswith("# dsa guard train")


def test_unknown_keys_overrides_and_validation(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("task: toxigen\narch: rtb\n")
    cfg = GuardTrainConfig.load(p, ["width=32", "ladder=[4, 9]", "target_fpr=0.1"])
    assert (cfg.width, cfg.ladder, cfg.target_fpr) == (32, [4, 9], 0.1)
    p.write_text("task: toxigen\nwidht: 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        GuardTrainConfig.load(p)
    with pytest.raises(ValueError, match="arch"):
        GuardTrainConfig(arch="svm")
    with pytest.raises(ValueError, match="trainable"):
        GuardTrainConfig(task="xstest")
    with pytest.raises(ValueError, match="key=value"):
        GuardTrainConfig.load(tmp_path / "c.yaml", ["width"]) if False else GuardTrainConfig.load(
            _ok(tmp_path), ["width"])


def _ok(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("task: toxigen\n")
    return p


def test_cli_registers_guard():
    args = build_parser().parse_args(["guard", "train", "configs/x.yaml", "arch=lst"])
    assert args.overrides == ["arch=lst"]
    args = build_parser().parse_args(["guard", "eval", "--all"])
    assert args.all


def test_max_length_defaults_to_the_task_length_used_by_the_evaluation():
    from dsa.guards.featurize import TASK_MAX_LENGTH

    assert GuardTrainConfig(task="summedits").max_length == TASK_MAX_LENGTH["summedits"]
    assert GuardTrainConfig(task="toxigen").max_length == 256
    assert GuardTrainConfig(task="toxigen", max_length=64).max_length == 64


def test_guard_eval_rejects_unknown_baselines_before_loading_anything(capsys):
    from dsa.cli import main

    assert main(["guard", "eval", "--baselines", "minilm_finetune,llama_guard"]) == 2
    err = capsys.readouterr().err
    assert "llama_guard" in err and "tfidf_lr" in err
