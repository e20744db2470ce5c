"""Every shipped alignment config loads; overrides are typed; unknown keys are rejected."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from dsa.recipes.align_config import AlignEvalConfig, AlignTrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("align-*.yaml")), ids=lambda p: p.name)
def test_shipped_config_loads(path):
    cls = AlignEvalConfig if "eval" in path.name else AlignTrainConfig
    cfg = cls.from_yaml(path)
    assert path.read_text().startswith("# dsa align ")
    assert cfg.model_dump()


def test_overrides_and_unknown_keys(tmp_path):
    cfg = AlignTrainConfig.from_yaml(None, ["epochs=3", "lr=1e-3", "method=lora_patch"])
    assert cfg.epochs == 3 and cfg.lr == 1e-3 and cfg.method == "lora_patch"
    with pytest.raises(ValueError, match="unknown key"):
        AlignTrainConfig.from_yaml(None, ["epoch=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: dsa_adapter\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rate'\]; known keys: \[.*'lr'"):
        AlignTrainConfig.from_yaml(bad)
    with pytest.raises(ValidationError):
        AlignTrainConfig.from_yaml(None, ["method=magic"])


def test_eval_configuration_names():
    from dsa.recipes.align_eval import config_names

    cfg = AlignEvalConfig(alphas=[1.0], lambdas=[0.5, 1.0], dpo_lambdas=[1.0], policies=["step", "sigmoid"])
    assert config_names(cfg) == ["base", "full_ft", "lora_patch@1", "dsa_adapter@0.5", "dsa_adapter@1",
                                 "dsa_dpo@1", "context_dependent@step", "context_dependent@sigmoid"]
    skip = AlignEvalConfig(full_ft="", lora_patch="", dsa_dpo="", dsa_adapter="", configs=[])
    assert config_names(skip) == ["base"]  # context-dependent alignment needs the DSA adapter
    only = AlignEvalConfig(configs=["base", "dsa_dpo@1"])
    assert config_names(only) == ["base", "dsa_dpo@1"]
    with pytest.raises(ValueError, match=r"dsa_adapter@0.75 not defined .* lambdas"):
        config_names(AlignEvalConfig(lambdas=[0.5, 1.0], configs=["base", "dsa_adapter@0.75"]))
    with pytest.raises(ValueError, match="context_dependent@step not defined"):  # no adapter: no cd rows
        config_names(AlignEvalConfig(dsa_adapter="", configs=["context_dependent@step"]))
