"""The tool calls the simulator answers with, as the Responses API puts them in ``output``.

A function tool is run by the caller: when the request forces it (``tool_choice``
``required``, or the function by name) or the document names it, the answer is a
``function_call`` item with arguments drawn from the function's parameters, and no message.
A tool the API runs itself (web or file search) leaves its call, done, before the message.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from workers.simulator.generate import generate

#: Tools the API runs itself, and the type of the call item each leaves in ``output``.
HOSTED_CALLS = {"web_search": "web_search_call", "web_search_preview": "web_search_call",
                "file_search": "file_search_call"}


def function_call(body: dict[str, Any], document: str) -> dict[str, Any] | None:
    """The ``function_call`` item that answers ``body``, or None if no function is called."""
    functions = [t for t in body.get("tools") or []
                 if isinstance(t, dict) and t.get("type") == "function"]
    if not functions:
        return None
    choice = body.get("tool_choice")
    chosen = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        chosen = next((f for f in functions if f.get("name") == choice.get("name")), None)
    elif choice == "required":
        chosen = functions[0]
    elif choice != "none":
        chosen = next((f for f in functions if str(f.get("name")) in document), None)
    if chosen is None:
        return None
    parameters = chosen.get("parameters") or {"type": "object", "properties": {}}
    return {"id": f"fc_{secrets.token_hex(24)}", "type": "function_call",
            "call_id": f"call_{secrets.token_hex(12)}", "name": chosen["name"],
            "arguments": json.dumps(generate(parameters, document)), "status": "completed"}


def hosted_calls(body: dict[str, Any], document: str) -> list[dict[str, Any]]:
    """The done calls of the tools the API runs itself, in the order of ``tools``."""
    calls: list[dict[str, Any]] = []
    for tool in body.get("tools") or []:
        kind = HOSTED_CALLS.get(str(tool.get("type"))) if isinstance(tool, dict) else None
        if kind == "web_search_call":
            calls.append({"id": f"ws_{secrets.token_hex(24)}", "type": kind,
                          "status": "completed", "action": {
                              "type": "search", "query": " ".join(document.split()[:8])}})
        elif kind == "file_search_call":
            calls.append({"id": f"fs_{secrets.token_hex(24)}", "type": kind,
                          "status": "completed", "queries": [" ".join(document.split()[:8])],
                          "results": None})
    return calls
