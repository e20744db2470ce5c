"""Layers as indices or fractions of depth, resolved against the model with clear errors: configs
written for SmolLM2's 30 layers keep their meaning there and stay valid on other depths."""

import pytest

from dsa.guards.config import GuardTrainConfig
from dsa.guards.featurize import LADDER_LAYERS
from dsa.taps import LayerRangeError, resolve_layer, resolve_layers, resolve_taps


def test_fractions_and_negative_indices():
    assert resolve_layers(["0.62", 0.62, -1, "1.0", 0, "0.0"], 30) == [18, 18, 29, 29, 0, 0]
    assert resolve_layers(["0.62", -1, "1.0"], 24) == [14, 23, 23]
    assert resolve_layer(-24, 24) == 0


def test_defaults_are_smollm2_layers_and_valid_on_other_depths():
    cfg = GuardTrainConfig().resolved(30)
    assert cfg.layer_sets == [[18], [9, 14, 19, 24], [6, 9, 12, 15, 18, 21, 24, 27]]
    assert cfg.ladder == [4, 9, 14, 19, 24, 29] == resolve_layers(LADDER_LAYERS, 30)
    for n in (12, 16, 24, 80):
        r = GuardTrainConfig().resolved(n)
        assert all(0 <= i < n for ls in r.layer_sets for i in ls) and all(0 <= i < n for i in r.ladder)
        assert r.ladder[-1] == n - 1


@pytest.mark.parametrize("spec, msg", [(24, r"layer 24 out of range: the model has 24 layers"),
                                       (-25, r"layer -25 out of range"), ("1.5", r"fraction '1.5' out of range"),
                                       ("eighteen", r"expected an index"), (True, r"expected an index")])
def test_bad_layers_say_what_is_wrong(spec, msg):
    with pytest.raises(LayerRangeError, match=msg):
        resolve_layer(spec, 24)


def test_config_error_names_the_field():
    cfg = GuardTrainConfig(layer_sets=[[6, 27]])
    with pytest.raises(LayerRangeError, match=r"layer_sets \[\[6, 27\]\]: layer 27 out of range: the model has 24"):
        cfg.resolved(24)
    with pytest.raises(LayerRangeError, match=r"^ladder"):
        GuardTrainConfig(ladder=[4, 29]).resolved(24)
    with pytest.raises(ValueError, match="non-empty"):
        GuardTrainConfig(layer_sets=[[]])


def test_a_tap_the_model_lacks_names_the_layer():
    with pytest.raises(LayerRangeError, match=r"layer 18 out of range: the model has 12 layers"):
        resolve_taps("18", 12)
    assert resolve_taps("0.5, -1", 12) == ["layers.6.resid_post", "layers.11.resid_post"]


def test_feature_ladder_out_of_range_is_an_error_not_a_wrap(tmp_path):
    from dsa.base import from_model
    from dsa.guards.featurize import extract_task_features
    from tests.tiny import tiny_model, tiny_tokenizer

    base = from_model(tiny_model("llama"), tiny_tokenizer(), name="tiny-llama")
    with pytest.raises(LayerRangeError, match=f"the model has {base.n_layers} layers"):
        extract_task_features(base, [base.chat_text("hi")], "unit", ladder_layers=(0, base.n_layers),
                              root=tmp_path, progress=False)
