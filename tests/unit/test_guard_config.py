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
    cfg = GuardTrainConfig.from_yaml(path)
    assert cfg.out.startswith("adapters/guards/")
    assert path.read_text().startswith("# dsa guard train")


def test_unknown_keys_overrides_and_validation(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("task: toxigen\narch: rtb\n")
    cfg = GuardTrainConfig.from_yaml(p, ["width=32", "ladder=[4, 9]", "target_fpr=0.1"])
    assert (cfg.width, cfg.ladder, cfg.target_fpr) == (32, [4, 9], 0.1)
    p.write_text("task: toxigen\nwidht: 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        GuardTrainConfig.from_yaml(p)
    with pytest.raises(ValueError, match="arch"):
        GuardTrainConfig(arch="svm")
    with pytest.raises(ValueError, match="trainable"):
        GuardTrainConfig(task="xstest")
    with pytest.raises(ValueError, match="key=value"):
        GuardTrainConfig.from_yaml(tmp_path / "c.yaml", ["width"]) if False else GuardTrainConfig.from_yaml(
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


def test_every_yaml_job_has_one_config_style():
    """`dsa guard train`, `dsa align train` and `dsa align eval` read their YAML through one base:
    unknown keys, key=value overrides and type errors behave the same, and every field is documented."""
    from dsa.config import Config
    from dsa.recipes.align_config import AlignEvalConfig, AlignTrainConfig

    for cls in (GuardTrainConfig, AlignTrainConfig, AlignEvalConfig):
        assert issubclass(cls, Config)
        assert all(f.description for f in cls.model_fields.values()), cls.__name__
        assert len(cls.help().splitlines()) == len(cls.model_fields)
        with pytest.raises(ValueError, match="unknown keys"):
            cls.from_yaml(None, ["no_such_key=1"])
    with pytest.raises(ValueError, match="epochs"):
        GuardTrainConfig.from_yaml(None, ["epochs=many"])  # a type error names its field
