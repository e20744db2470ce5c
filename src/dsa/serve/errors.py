"""OpenAI-shaped errors: every failure is `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import re

from pydantic import BaseModel

from dsa.extras import needs_extra

with needs_extra("serve", "HTTP server (dsa.serve)"):
    from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "server_error"}


WHY = {400: "invalid request: a bad field, value or JSON body, or a prompt over the context",
       401: "missing or invalid API key (only when the server has keys)",
       404: "unknown model", 413: "request body over --max-body-bytes",
       429: "request queue full (--max-queue); retry later",
       503: "the server is shutting down, or the model worker stopped",
       500: "internal error"}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error this server sends (OpenAI's shape)."""

    error: ErrorDetail


def documented(*statuses: int) -> dict:
    """`responses=` for a route: the errors it can send, in the OpenAPI document."""
    return {s: {"model": ErrorResponse, "description": WHY[s]} for s in statuses}


class APIError(Exception):
    """An error the client sees, with its HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}

    def response(self, headers: dict | None = None) -> JSONResponse:
        if self.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param, code)


def from_validation(errors: list[dict]) -> APIError:
    """The first pydantic error as a 400 naming the parameter (dotted path)."""
    err = errors[0]
    # keep field names and list indices; drop union-branch labels ("constrained-str", "literal['auto']")
    loc = [str(x) for x in err.get("loc", ()) if isinstance(x, int) or re.fullmatch(r"[a-z_][a-z0-9_]*", str(x))]
    param = ".".join(x for x in loc if x not in ("body", "str", "int", "float", "bool", "list", "dict"))
    msg = err.get("msg", "invalid value")
    return APIError(400, f"{param or 'body'}: {msg}" if param else msg, param or None,
                    "unknown_parameter" if err.get("type") == "extra_forbidden" else "invalid_value")
