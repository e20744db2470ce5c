"""Hypothesis strategies for hostile OpenAI request bodies (shared by the fuzz tests and
scripts/server_load.py): mostly well-formed bodies with NaN/±Infinity/huge numbers, lone
surrogates, wrong types, unknown roles and parts, and arbitrary JSON in every field."""

from hypothesis import strategies as st

scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                    st.text(max_size=12), st.sampled_from(["\ud800", "auto", "", "\udfff x"]))
any_json = st.recursive(scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=6)
content = st.text(max_size=40) | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=12) | any_json}),
    max_size=3) | any_json
message = st.fixed_dictionaries({
    "role": st.sampled_from(["user", "system", "assistant", "developer", "tool"]) | any_json,
    "content": content})
number = st.floats() | st.integers(-(2**65), 2**65) | any_json


def chat_bodies(model: str = "tiny"):
    """POST /v1/chat/completions bodies (`model` is the served name; "x" is not)."""
    return st.fixed_dictionaries(
        {"messages": st.lists(message, min_size=1, max_size=3) | any_json},
        optional={"max_tokens": st.integers(-2, 4) | any_json, "max_completion_tokens": st.integers(0, 3) | any_json,
                  "temperature": number, "seed": number, "alignment": number | st.just("auto"),
                  "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=5) | any_json,
                  "stream": st.booleans(), "n": st.integers(0, 3), "top_p": number,
                  "model": st.sampled_from([model, "x"]),
                  "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | any_json}) | any_json,
                  "frequency_penalty": number, "user": any_json})


def moderation_bodies(model: str = "tiny"):
    """POST /v1/moderations bodies."""
    return st.fixed_dictionaries(
        {"input": st.text(max_size=30) | st.lists(st.text(max_size=10), max_size=40) | any_json},
        optional={"model": st.sampled_from([model, "x"]) | any_json})
