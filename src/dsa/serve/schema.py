"""Request bodies of the OpenAI endpoints, validated strictly: finite numbers, sane ranges, valid
UTF-8 text, and a 400 for parameters this server cannot honour (rather than ignoring them)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

INT64 = 2**63


def _text(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid UTF-8 (lone surrogate)") from None
    return s


Text = Annotated[StrictStr, Field(max_length=2_000_000)]
Number = StrictFloat | StrictInt


def _finite(v: float | None, name: str, lo: float, hi: float) -> float | None:
    if v is None:
        return v
    v = float(v)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be a finite number in [{lo:g}, {hi:g}]")
    return v


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: Text

    _utf8 = field_validator("text")(_text)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: StrictStr | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, v):
        if isinstance(v, str):
            return _text(v)
        if not v:
            raise ValueError("content parts must not be empty")
        return v

    def as_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions. `alignment` is this server's extension: "auto" or a λ in [0, 1]
    (a client λ raises alignment above the guard policy; lowering it needs an override key)."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: StrictInt | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=1_000_000)
    temperature: Number | None = None
    top_p: Number | None = None
    seed: StrictInt | None = Field(None, ge=-INT64, lt=INT64)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = None
    n: StrictInt | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    logprobs: StrictBool | None = None
    user: StrictStr | None = None
    alignment: Literal["auto"] | Number | None = Field(
        None, description='"auto" (default): λ from the guard policy; a number in [0, 1]: a floor on λ '
                          "(an override key may set λ exactly)")

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v):
        return _finite(v, "temperature", 0.0, 2.0)

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v):
        v = _finite(v, "top_p", 0.0, 1.0)
        if v is not None and v != 1.0:
            raise ValueError("only top_p = 1 is supported")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _penalty(cls, v):
        v = _finite(v, "penalty", -2.0, 2.0)
        if v:
            raise ValueError("presence/frequency penalties are not supported (use 0)")
        return v

    @field_validator("n")
    @classmethod
    def _n(cls, v):
        if v is not None and v != 1:
            raise ValueError("only n = 1 is supported")
        return v

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, v):
        if v:
            raise ValueError("logprobs are not supported")
        return v

    @field_validator("alignment")
    @classmethod
    def _alignment(cls, v):
        return v if v in (None, "auto") else _finite(v, "alignment", 0.0, 1.0)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings of up to 256 characters")
        return [_text(s) for s in stops]

    def budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class ModerationRequest(BaseModel):
    """POST /v1/moderations: one text, or a non-empty list of texts (or text parts)."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr | None = None
    input: Text | list[Text] | list[TextPart]

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any):
        if isinstance(v, list) and not v:
            raise ValueError("input must not be an empty list")
        items = [v] if isinstance(v, str) else v
        return [_text(x if isinstance(x, str) else x.text) for x in items]
