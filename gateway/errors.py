"""Typed API errors and the one exception handler that renders them.

Services raise an `ApiError` subclass; the edge turns it into the envelope of
DESIGN.md, the OpenAI error shape extended:
`{"error": {"type", "code", "message", "param", "details"}}`. Nothing else builds
error JSON by hand, and no stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    SerializationException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "budget_exceeded_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An error a client should see: an HTTP status, a stable code and a clear message."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        details: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.details = details
        self.headers = headers or {}

    @property
    def type(self) -> str:
        if self.status >= 500:
            return "api_error"
        return _TYPES.get(self.status, "invalid_request_error")

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "details": self.details,
            }
        }


class BadRequest(ApiError):
    status = 400
    code = "invalid_request"


class Unauthorized(ApiError):
    status = 401
    code = "invalid_api_key"


class BudgetExceeded(ApiError):
    status = 402
    code = "budget_exceeded"


class Forbidden(ApiError):
    status = 403
    code = "insufficient_scope"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "request_too_large"


class Unprocessable(ApiError):
    status = 422
    code = "unprocessable_entity"


class InvalidRunbook(Unprocessable):
    code = "invalid_runbook"


class RateLimited(ApiError):
    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int, **kwargs: Any) -> None:
        headers = {"Retry-After": str(max(1, retry_after_s))}
        super().__init__(message, headers=headers, **kwargs)
        self.retry_after_s = retry_after_s


class UpstreamError(ApiError):
    status = 502
    code = "upstream_error"


class Unavailable(ApiError):
    status = 503
    code = "service_unavailable"


def error_response(error: ApiError) -> Response[dict[str, Any]]:
    return Response(
        content=error.to_body(),
        status_code=error.status,
        media_type=MediaType.JSON,
        headers=error.headers,
    )


_FIELD_IN_MESSAGE = re.compile(r"at `\$\.?([^`]*)`")


def _from_validation(exc: ValidationException) -> ApiError:
    """Turn Litestar's body validation error into a 400 that names the field."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    param = None
    message = str(exc.detail or "Invalid request body")
    for item in extra:
        if isinstance(item, dict):
            key = item.get("key")
            if key:
                param = str(key)
            if item.get("message"):
                message = str(item["message"])
            break
    if param is None and (match := _FIELD_IN_MESSAGE.search(message)):
        param = match.group(1) or None
    if param and param not in message:
        message = f"{message} (field `{param}`)"
    return BadRequest(message, code="invalid_body", param=param)


def to_api_error(exc: Exception) -> ApiError:
    """Map any exception to the `ApiError` a client sees."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ValidationException):
        return _from_validation(exc)
    if isinstance(exc, SerializationException):
        return BadRequest(f"Request body is not valid JSON: {exc.detail}", code="invalid_json")
    if isinstance(exc, NotAuthorizedException):
        return Unauthorized(str(exc.detail))
    if isinstance(exc, PermissionDeniedException):
        return Forbidden(str(exc.detail))
    if isinstance(exc, NotFoundException):
        return NotFound(str(exc.detail) if exc.detail != "Not Found" else "No such route")
    if isinstance(exc, MethodNotAllowedException):
        return ApiError(str(exc.detail), status=405, code="method_not_allowed")
    if isinstance(exc, HTTPException):
        if exc.status_code == 413:
            return PayloadTooLarge(str(exc.detail))
        if exc.status_code < 500:
            return ApiError(str(exc.detail), status=exc.status_code, code="invalid_request")
    return ApiError("Internal server error", status=HTTP_500_INTERNAL_SERVER_ERROR)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """The single exception handler: render the envelope, log unexpected errors once."""
    error = to_api_error(exc)
    if error.status >= 500 and not isinstance(exc, ApiError):
        log.error("unhandled error path=%s", request.url.path, exc_info=exc)
    return error_response(error)


class ModelNotFound(NotFound):
    code = "model_not_found"


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class RunbookModeUnavailable(Unprocessable):
    code = "runbook_mode_unavailable"


# --- runbooks (appended by the runbooks slice) ---------------------------------


class MissingInputs(Unprocessable):
    """A runbook run lacks required inputs or secrets; `details` lists every one."""

    code = "missing_inputs"


class UrlNotAllowed(BadRequest):
    """A runbook URL is outside what this gateway may fetch (scheme, private address, root)."""

    code = "url_not_allowed"


class RunbookFetchFailed(Unprocessable):
    """The runbook source answered with an error, or could not be reached."""

    code = "runbook_fetch_failed"
