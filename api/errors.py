"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Engine errors (:mod:`assistant.errors`) carry their own HTTP status and code; this module
translates them, and pydantic's validation errors, once, for the /v1 routes only.
"""

from __future__ import annotations

import logging

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.responses import ErrorDetail, ErrorResponse
from assistant import request_ids
from assistant.errors import AssistantError, InvalidParams

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _type_for(status)
        self.headers = headers or {}

    def body(self) -> dict:
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()

    def response(self, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers={**self.headers, **(headers or {})})


def _type_for(status: int) -> str:
    # As OpenAI does: every client error (401 and 404 included) is an invalid_request_error.
    return "server_error" if status >= 500 else "invalid_request_error"


def from_exception(exc: BaseException) -> ApiError:
    """Any exception → ApiError; unexpected ones are logged and hidden behind a 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        return from_validation(exc.errors())
    if isinstance(exc, AssistantError):
        retry = getattr(exc, "retry_after_s", None)  # a user's limit (assistant.quotas)
        headers = {"Retry-After": str(retry)} if retry is not None else None
        return ApiError(exc.http_status, str(exc), code=exc.code, headers=headers)
    log.exception("unexpected error in the API", exc_info=exc)
    named = f", request {request_ids.current()}" if request_ids.current() else ""
    return ApiError(
        500, f"internal error ({type(exc).__name__}); see the server log{named}", code="internal_error"
    )


def from_invalid_params(exc: InvalidParams, fields: dict[str, str]) -> ApiError:
    """An engine option's error, named by the request field that set it (max_tokens, not max_new_tokens)."""
    if exc.param is None or exc.rule is None:
        return from_exception(exc)
    field = fields.get(exc.param, exc.param)
    return ApiError(exc.http_status, f"{field} {exc.rule}", param=field, code=exc.code)


def param_path(loc) -> str:
    """pydantic loc → ``messages[0].content[1].image_url.url`` (union member names dropped)."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool", "none", "function-after"):
            continue  # pydantic names the union member it tried; not a field
        else:
            out += f".{part}" if out else part
    return out


def from_validation(errors) -> ApiError:
    if not errors:
        return ApiError(400, "invalid request")
    # Unions report one error per member; the deepest is the one that says what is wrong.
    error = max(errors, key=lambda e: len(e.get("loc", ())))
    param = param_path(error.get("loc", ())) or None
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return ApiError(
            400, f"Unrecognized request argument supplied: {param}", param=param, code="unknown_parameter"
        )
    if kind in ("json_invalid", "model_attributes_type") or param is None:
        return ApiError(
            400,
            "the request body is not valid JSON (send a JSON object with 'model' and 'messages')",
            code="invalid_json",
        )
    if kind == "missing":
        return ApiError(
            400, f"missing required parameter: {param}", param=param, code="missing_required_parameter"
        )
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")
