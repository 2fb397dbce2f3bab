"""What the simulator's services share: the API's error body, and what the Files and Batch
APIs need from the Responses API they run lines through."""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from aiohttp import web


def error(status: int, message: str, type_: str, code: str | None, param: str | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    """An error answer in the API's shape: ``{"error": {message, type, param, code}}``."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


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
