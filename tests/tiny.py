"""Tiny random decoder LMs built from configs (no downloads) and a tiny word-level tokenizer."""

from __future__ import annotations

import torch

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=300, max_position_embeddings=256)


def tiny_config(arch: str):
    """A tiny random config of `arch`, one per entry of `dsa.taps.ARCHITECTURES` (a test checks)."""
    import transformers as tf

    if arch == "llama":
        return tf.LlamaConfig(**TINY)
    if arch == "qwen2":
        return tf.Qwen2Config(**TINY)
    if arch == "qwen3":
        return tf.Qwen3Config(**TINY, head_dim=16)
    if arch == "mistral":
        return tf.MistralConfig(**TINY, sliding_window=None)
    if arch == "mixtral":
        return tf.MixtralConfig(**TINY, sliding_window=None, num_local_experts=4, num_experts_per_tok=2)
    if arch == "gemma":
        return tf.GemmaConfig(**TINY, head_dim=16)
    if arch == "gemma2":
        return tf.Gemma2Config(**TINY, head_dim=16, sliding_window=4)
    if arch == "gemma3_text":
        return tf.Gemma3TextConfig(**TINY, head_dim=16, sliding_window=4,
                                   layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    if arch == "gemma3":  # with a (tiny) vision tower; text-only inputs run the text decoder
        text = tiny_config("gemma3_text").to_dict()
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=28, patch_size=14)
        return tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    if arch == "phi3":
        return tf.Phi3Config(**TINY, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "olmo2":
        return tf.Olmo2Config(**TINY, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "granite":  # multipliers away from 1 so a missing scale shows
        return tf.GraniteConfig(**TINY, residual_multiplier=0.5, embedding_multiplier=3.0)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=64, n_layer=3, n_head=4, vocab_size=300, n_positions=256,
                             bos_token_id=1, eos_token_id=1)
    if arch == "gpt_neox":  # not in the table: the test of an ArchSpec given in YAML
        return tf.GPTNeoXConfig(**TINY, bos_token_id=1, eos_token_id=2)
    raise ValueError(arch)


def tiny_model(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=dtype)
    return model.eval()


_WORDS = ("the a an is are was how do i make to of and in for you what why can please tell me "
          "about bomb cake recipe kill process weather today write poem hello world good bad "
          "safe unsafe yes no user assistant system").split()


def tiny_tokenizer():
    """A word-level fast tokenizer with a chat template, built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate(specials + _WORDS + [".", "?", "!", ",", "\n", ":"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} \n {{ m['content'] }} <|im_end|> \n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant \n {% endif %}"
    )
    return fast


