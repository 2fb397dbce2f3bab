"""The one place where OpenAI SDK exceptions become docpipe errors.

Classification is by the error body's ``code`` first, then the HTTP status: a 429 can be a
rate limit (wait and retry) or an exhausted quota (pause the run; retrying only burns
requests), and only the body tells them apart.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping

import openai

from workers.errors import (
    AuthenticationFailedError,
    CapacityUnavailableError,
    ItemError,
    ModelNotFoundError,
    PermanentAPIError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestRefusedError,
    TransientError,
)

#: Codes of a flex request refused for lack of capacity (the docs only name the message,
#: "429 Resource Unavailable", so the message is matched too).
_CAPACITY_CODES = frozenset({"resource_unavailable", "flex_unavailable"})
#: Error codes that mean money or quota ran out, not that we went too fast.
QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "billing_hard_limit_reached",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "project_usage_limit_exceeded",
    }
)
#: Codes that refuse the request the pipeline builds, whatever field they name.
_PIPELINE_CODES = frozenset({"invalid_json_schema", "unsupported_parameter",
                             "unsupported_value", "unknown_parameter",
                             "invalid_function_parameters"})
_QUOTA_SUFFIXES = ("_spend_limit_exceeded", "_usage_limit_exceeded")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
                 "ns": 1e-9}


def is_quota_code(code: str | None) -> bool:
    """True for the error codes of exhausted quota, credit or spend limits."""
    return bool(code) and (code in QUOTA_CODES or str(code).endswith(_QUOTA_SUFFIXES))


def parse_duration(value: str | None) -> float | None:
    """Seconds in a Go duration string (``6m0s``, ``20ms``, ``1.5s``), or None."""
    if not value:
        return None
    parts = _DURATION.findall(value.strip())
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, then ``retry-after``."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            value = float(ms) / 1000
            return value if math.isfinite(value) and value >= 0 else None
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def classify(exc: openai.OpenAIError) -> ItemError:
    """Map an SDK exception to the docpipe error that says what to do next."""
    if isinstance(exc, openai.APITimeoutError):
        return TransientError(f"request timed out: {exc}", code="timeout")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return TransientError(f"connection failed: {cause.__class__.__name__}: {cause}",
                              code="connection_error")
    if not isinstance(exc, openai.APIStatusError):
        return PermanentAPIError(f"{exc.__class__.__name__}: {exc}", code="client_error")

    # The API's own words, not the SDK's "Error code: 400 - {...}" around them.
    body = exc.body if isinstance(exc.body, Mapping) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else exc.message
    return classify_status(exc.status_code, code=exc.code or None, kind=exc.type,
                           message=str(message), param=exc.param, request_id=exc.request_id,
                           headers=exc.response.headers)


def refused_for_the_pipeline(status: int, code: str | None, param: str | None) -> bool:
    """Whether a 400 refuses the pipeline's own request, not the document in it.

    The API names the field it refuses in ``param``. A field other than the input (the
    schema, a parameter, the model's limits) is the same in every request of the run, as
    are the codes of a parameter the model does not take or an invalid schema; the input's
    refusals (an image, a file, a document too long) are the document's own.
    """
    if status != 400:
        return False
    if code in _PIPELINE_CODES:
        return True
    return bool(param) and not str(param).startswith("input")


def classify_status(status: int, *, code: str | None, kind: str | None, message: str,
                    param: str | None = None, request_id: str | None = None,
                    headers: Mapping[str, str] | None = None) -> ItemError:
    """The docpipe error for an HTTP error answer, live or in a Batch API line."""
    headers = headers or {}
    if is_quota_code(code) or is_quota_code(kind):
        return QuotaExhaustedError(
            message, code=code or kind, http_status=status, request_id=request_id
        )
    if status == 429:
        return _too_many(code, message, headers, request_id)
    if status == 401:
        return AuthenticationFailedError(
            message, code=code or "invalid_api_key", http_status=status, request_id=request_id
        )
    if status == 404 or code == "model_not_found":  # seen as a 404 and as a 400
        return ModelNotFoundError(
            message, code=code or "not_found", http_status=status, request_id=request_id
        )
    if refused_for_the_pipeline(status, code, param):
        return RequestRefusedError(message, param=param, code=code or "invalid_request",
                                   http_status=status, request_id=request_id)
    if status in (408, 409) or status >= 500:
        return TransientError(
            message, code=code or f"http_{status}", retry_after=parse_retry_after(headers),
            http_status=status, request_id=request_id,
        )
    return PermanentAPIError(
        message, code=code or f"http_{status}", http_status=status, request_id=request_id
    )


def _too_many(code: str | None, message: str, headers: Mapping[str, str],
              request_id: str | None) -> ItemError:
    """A 429 that is not about quota: no flex capacity, a single request larger than the
    whole per-minute budget (waiting cannot help), or a rate limit."""
    lowered = message.lower()
    if code in _CAPACITY_CODES or "resource unavailable" in lowered:
        return CapacityUnavailableError(
            message, code=code or "resource_unavailable", retry_after=parse_retry_after(headers),
            http_status=429, request_id=request_id,
        )
    if "request too large" in lowered or "must be reduced" in lowered:
        return PermanentAPIError(message, code="request_too_large", http_status=429,
                                 request_id=request_id)
    return RateLimitedError(
        message, code=code or "rate_limit_exceeded", retry_after=parse_retry_after(headers),
        http_status=429, request_id=request_id,
    )
