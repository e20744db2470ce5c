"""The foundation on the real embedded base, SmolLM2-135M-Instruct."""

import pytest
import torch

from dsa.base import load_base
from dsa.features import extract_features
from dsa.taps import hook_count, record_taps, run_with_taps

pytestmark = pytest.mark.integration


def test_loads_from_cache_with_stable_fingerprint(real_base):
    again = load_base()
    assert again.fingerprint == real_base.fingerprint
    assert again.n_layers == 30 and again.d_model == 576
    print(f"cached reload took {again.load_seconds:.2f} s")


def test_chat_template_and_a_real_answer(real_base):
    text = real_base.chat_text("What is the capital of France?")
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    enc = real_base.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        out = real_base.model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = real_base.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_taps_equal_output_hidden_states(real_base):
    enc = real_base.tokenizer([real_base.chat_text("Hi there"), "a short one"], return_tensors="pt", padding=True)
    taps = ["embed", *[f"layers.{i}.resid_post" for i in range(30)], "final_norm"]
    with torch.inference_mode():
        hs = real_base.model(**enc, output_hidden_states=True).hidden_states
        _, cache = run_with_taps(real_base.model, dict(enc), taps)
    assert torch.equal(cache["embed"], hs[0])
    for i in range(29):
        assert torch.equal(cache[f"layers.{i}.resid_post"], hs[i + 1])
    assert torch.equal(cache["final_norm"], hs[30])


def test_no_hook_survives_an_exception(real_base):
    before = hook_count(real_base.model)
    enc = real_base.tokenizer(["hello"], return_tensors="pt")
    with pytest.raises(KeyError), torch.inference_mode(), record_taps(real_base.model, ["all"]):
        real_base.model(**enc)
        raise KeyError("inside the context")
    assert hook_count(real_base.model) == before


def test_feature_extraction_on_toxigen(real_base, tmp_path):
    from dsa.data import DataError, guard_task

    try:
        recs = guard_task("toxigen").test[:48]
    except DataError as err:
        pytest.skip(str(err))
    feats = extract_features(real_base, [r.text for r in recs], "18,-1", cache_root=tmp_path, progress=False)
    assert feats.values["layers.18.resid_post"].shape == (48, 576)
    assert torch.isfinite(feats.values["layers.29.resid_post"]).all()


def test_two_processes_dequantising_at_once_both_get_the_cache(tmp_path):
    """Issue #25: two first loads at once used to crash one of them (`OSError: Directory not
    empty` from the final rename); now they take turns and both return the same complete copy."""
    import os
    import subprocess
    import sys

    code = "from dsa.base import _materialise_embedded; print(_materialise_embedded('smollm2-135m-instruct'))"
    env = {**os.environ, "DSA_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    target = tmp_path / "models" / "smollm2-135m-instruct"
    assert {o.strip() for o, _ in outs} == {str(target)}
    assert (target / "config.json").exists() and list(target.glob("*.safetensors"))
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".smollm2-135m-instruct-")]
