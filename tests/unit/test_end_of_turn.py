"""Answers stop on the model's own end-of-turn tokens (its generation config), not only on eos."""

from dsa.runtime import end_of_turn_ids


def test_generation_config_eos_list_is_used():
    from dsa.base import from_model
    from tests.tiny import tiny_model, tiny_tokenizer

    base = from_model(tiny_model("llama"), tiny_tokenizer(), name="tiny-llama")
    eos = base.tokenizer.eos_token_id
    assert eos in end_of_turn_ids(base)
    base.model.generation_config.eos_token_id = [5, 7]
    assert {eos, 5, 7} <= set(end_of_turn_ids(base))
    base.model.generation_config.eos_token_id = 9
    assert 9 in end_of_turn_ids(base)
