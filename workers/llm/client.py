"""The Responses API client: one per process, SDK retries off, every call measured.

docpipe decides about retries itself (:mod:`workers.llm.errors`), so the SDK's own retry
loop, which retries ``insufficient_quota`` and sleeps inside the worker, is disabled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import openai
from openai.types.responses import Response

from workers.clock import utcnow
from workers.errors import (
    BadOutputError,
    ConfigurationError,
    ItemError,
    PermanentAPIError,
    TransientError,
    Usage,
)
from workers.llm.errors import classify
from workers.process.local import PerProcess
from workers.settings import Settings

#: Where a request body is posted. The body docpipe builds is already the wire's JSON (a
#: Batch API line sends the same), so it is posted as it is: ``responses.create(**body)``
#: would walk it against the SDK's typed parameters first, which was 11% of an engine
#: process's CPU at 256 calls in flight. The answer is read by the SDK as before.
RESPONSES = "/responses"


@dataclass
class CallResult:
    """What one HTTP call returned: the output text or the error, and what it cost."""

    model: str
    started_at: datetime
    latency_ms: int
    http_status: int | None = None
    request_id: str | None = None
    response_id: str | None = None
    usage: Usage = field(default_factory=Usage)
    output_text: str | None = None
    error: ItemError | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        """Answered by docpipe's simulator, which says so in a header of its own."""
        return self.headers.get(SIMULATOR_HEADER) == "1"


#: The header docpipe's simulator adds to every answer (no OpenAI answer carries it).
SIMULATOR_HEADER = "x-docpipe-simulator"


class AsyncResponsesClient:
    """Calls ``POST /v1/responses`` and turns every outcome into a :class:`CallResult`: the
    model client of the item engine's event loop, on ``AsyncOpenAI``."""

    def __init__(self, *, api_key: str, base_url: str | None, timeout: float) -> None:
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)

    async def create(self, body: dict[str, Any]) -> CallResult:
        """Send one request; never raises for API or network failures."""
        started, clock = utcnow(), time.perf_counter()
        try:
            raw = await self._client.post(RESPONSES, body=body,
                                          cast_to=openai.AsyncAPIResponse[Response])
            latency = _ms_since(clock)
            response = await raw.parse()
        except openai.OpenAIError as exc:
            return _failed(exc, body, started, clock)
        return _answered(raw, response, body, started, latency)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.close()


def _failed(exc: openai.OpenAIError, body: dict[str, Any], started: datetime, clock: float
            ) -> CallResult:
    error = classify(exc)
    return CallResult(
        model=str(body.get("model", "")), started_at=started, latency_ms=_ms_since(clock),
        http_status=error.http_status, request_id=error.request_id, error=error,
        headers=exc.response.headers if isinstance(exc, openai.APIStatusError) else {},
    )


def _answered(raw: Any, response: Response, body: dict[str, Any], started: datetime,
              latency: int) -> CallResult:
    return answered(response, model=str(body.get("model", "")), started_at=started,
                    latency_ms=latency, http_status=raw.status_code,
                    request_id=raw.request_id, headers=raw.headers)


def answered(response: Response, *, model: str, started_at: datetime, latency_ms: int,
             http_status: int, request_id: str | None,
             headers: Mapping[str, str] | None = None) -> CallResult:
    """A response the API answered with a success status, as a :class:`CallResult`: its
    output text, or the error the response itself reports (refusal, truncation, failure).
    Live calls and Batch API lines are read alike."""
    result = CallResult(
        model=response.model or model, started_at=started_at, latency_ms=latency_ms,
        http_status=http_status, request_id=request_id, response_id=response.id,
        usage=usage_of(response), headers=headers or {},
    )
    try:
        result.output_text = output_text(response)
    except ItemError as exc:
        exc.request_id, exc.response_id = result.request_id, response.id
        exc.usage, exc.http_status = result.usage, http_status
        result.error = exc
    return result


def _ms_since(clock: float) -> int:
    return int((time.perf_counter() - clock) * 1000)


def usage_of(response: Response) -> Usage:
    """Token usage of a response; zeros where the API left a field out."""
    usage = response.usage
    if usage is None:
        return Usage()
    cached = getattr(usage.input_tokens_details, "cached_tokens", 0) or 0
    reasoning = getattr(usage.output_tokens_details, "reasoning_tokens", 0) or 0
    return Usage(
        input_tokens=usage.input_tokens or 0,
        cached_tokens=cached,
        output_tokens=usage.output_tokens or 0,
        reasoning_tokens=reasoning,
    )


def output_text(response: Response) -> str:
    """The JSON text of a completed response.

    Raises:
        BadOutputError: refusal, truncation (``max_output_tokens``), content filter, or a
            call of a tool the caller must run, with no answer (``tool_call``).
        TransientError: the response failed with a server error.
        PermanentAPIError: the response failed for another reason.
    """
    if response.status == "failed":
        error = response.error
        code = str(error.code) if error else "failed"
        message = error.message if error else "the response failed"
        if code in ("server_error", "rate_limit_exceeded"):
            raise TransientError(message, code=code)
        raise PermanentAPIError(message, code=code)
    if response.status == "incomplete":
        reason = response.incomplete_details.reason if response.incomplete_details else None
        if reason == "content_filter":
            raise BadOutputError("the output was stopped by the content filter",
                                 code="content_filter")
        raise BadOutputError(
            f"the output was cut off ({reason or 'incomplete'}); raise max_output_tokens",
            code="truncated",
        )
    texts: list[str] = []
    calls: list[str] = []
    for item in response.output:
        if item.type in _CALLER_RUN:
            calls.append(getattr(item, "name", None) or item.type)
        if item.type != "message":
            continue
        for part in item.content:
            if part.type == "refusal":
                raise BadOutputError(f"the model refused: {part.refusal}", code="refusal")
            if part.type == "output_text":
                texts.append(part.text)
    if calls and not texts:  # a call for the caller to run, not an empty answer
        raise BadOutputError(f"the model called {', '.join(calls)} instead of answering: "
                             "docpipe does not run tools the caller must run",
                             code="tool_call")
    return "".join(texts)


#: Output items that ask the caller to run something and send its result back.
_CALLER_RUN = frozenset({"function_call", "custom_tool_call", "computer_call",
                         "local_shell_call", "shell_call", "apply_patch_call",
                         "mcp_approval_request"})


_sdks: PerProcess[None, openai.OpenAI] = PerProcess()


def files_and_batches(settings: Settings) -> openai.OpenAI:
    """This process's synchronous SDK client for the Files and Batch APIs (one connection
    pool per process, two SDK retries). Model calls go through the item engine's
    :class:`AsyncResponsesClient`."""
    key = api_key(settings)
    return _sdks.get(None, lambda: openai.OpenAI(
        api_key=key, base_url=settings.openai_base_url,
        timeout=settings.request_timeout_seconds, max_retries=2))


def api_key(settings: Settings) -> str:
    """The API key, or a clear error naming the setting when it is missing."""
    if settings.openai_api_key is None:
        raise ConfigurationError("OPENAI_API_KEY is not set: workers cannot call the model API")
    return settings.openai_api_key.get_secret_value()
