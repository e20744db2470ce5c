"""Request bodies of the OpenAI endpoints, validated strictly: finite numbers, sane ranges, valid
UTF-8 text, and a 400 for parameters this server cannot honour (rather than ignoring them)."""

from __future__ import annotations

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
StopText = Annotated[StrictStr, Field(min_length=1, max_length=256)]


def number(lo: float, hi: float, **kw) -> type:
    """A finite JSON number in [lo, hi] (an integer too; not a string or a boolean): validated by
    pydantic and shown as minimum/maximum in the OpenAPI document."""
    return Annotated[StrictFloat, Field(ge=lo, le=hi, allow_inf_nan=False, **kw)]


Temperature = number(0.0, 2.0)
Lambda = number(0.0, 1.0)
TopP = number(1.0, 1.0, description="only 1 is supported (OpenAI's range: [0, 1])")
Penalty = number(0.0, 0.0, description="only 0 is supported (OpenAI's range: [-2, 2])")
N = Annotated[StrictInt, Field(ge=1, le=1, description="only 1 is supported")]


def _only(value: float, what: str):
    """A before-validator: a number other than `value` is refused with a message saying why
    (the field's range is exactly [value, value]; the range check alone would say 'less than')."""

    def check(v):
        if isinstance(v, int | float) and not isinstance(v, bool) and v != value:
            raise ValueError(what)
        return v

    return check


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
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: StrictInt | None = Field(None, ge=-INT64, lt=INT64)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=4)] | None = None
    n: N | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logprobs: Literal[False] | None = Field(None, description="not supported: false or absent")
    user: StrictStr | None = None
    alignment: Lambda | Literal["auto"] | None = Field(
        None, description='"auto" (default): λ from the guard policy; a number in [0, 1]: a floor on λ '
                          "(an override key may set λ exactly)")

    _top_p = field_validator("top_p", mode="before")(_only(1.0, "only top_p = 1 is supported"))
    _penalty = field_validator("presence_penalty", "frequency_penalty", mode="before")(
        _only(0.0, "presence/frequency penalties are not supported (use 0)"))
    _n = field_validator("n", mode="before")(_only(1, "only n = 1 is supported"))

    @field_validator("logprobs", mode="before")
    @classmethod
    def _logprobs(cls, v):
        if v is True:
            raise ValueError("logprobs are not supported")
        if v is not None and v is not False:
            raise ValueError("logprobs must be false or absent (logprobs are not supported)")
        return v

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_limits(cls, v):
        stops = [v] if isinstance(v, str) else v if isinstance(v, list) else []
        if len(stops) > 4 or any(isinstance(s, str) and not 0 < len(s) <= 256 for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings of up to 256 characters")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        return [_text(s) for s in ([v] if isinstance(v, str) else (v or []))]

    def budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class ModerationRequest(BaseModel):
    """POST /v1/moderations: one text, or a non-empty list of texts (or text parts)."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr | None = None
    input: Text | Annotated[list[Text], Field(min_length=1)] | Annotated[list[TextPart], Field(min_length=1)]

    @field_validator("input", mode="before")
    @classmethod
    def _not_empty(cls, v: Any):
        if isinstance(v, list) and not v:
            raise ValueError("input must not be an empty list")
        return v

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any):
        items = [v] if isinstance(v, str) else v
        return [_text(x if isinstance(x, str) else x.text) for x in items]
