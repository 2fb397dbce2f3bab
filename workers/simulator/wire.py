"""What the simulator's services share: the API's error body, and what the Files and Batch
APIs need from the Responses API they run lines through."""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger(__name__)

#: What the API says when it fails on its side.
SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"


def error(status: int, message: str, type_: str, code: str | None, param: str | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    """An error answer in the API's shape: ``{"error": {message, type, param, code}}``."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def request_id() -> str:
    """A new ``x-request-id``, in the API's form."""
    return f"req_{secrets.token_hex(16)}"


@web.middleware
async def api_errors(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
    """Every answer as the API gives it: an ``x-request-id`` on each, an unknown route as
    the API's 404 error object, and a failure of the simulator's own as a JSON 500, never
    aiohttp's text/plain."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        response = error(404, f"Invalid URL ({request.method} {request.path})",
                         "invalid_request_error", None)
    except Exception:
        log.exception("the simulator failed on %s %s", request.method, request.path)
        response = error(500, SERVER_ERROR, "server_error", None)
    if not response.prepared:
        response.headers.setdefault("x-request-id", request_id())
    return response


class Responder(Protocol):
    """The Responses API as a batch sees it: its key check, its validation, its answers."""

    stats: Counter[str]

    @property
    def config(self) -> Any: ...

    def check_auth(self, request: web.Request) -> web.Response | None:
        """The error for a request without a valid key, or None."""

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        """The 400 the API gives ``body``, or None if it is valid."""

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response object for a valid ``body``."""
