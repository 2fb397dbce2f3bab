"""The Files and Batch APIs of the simulator: uploads, batches on /v1/responses, results.

A batch first validates its input file as the Batch API documents it: every line a JSON
object with a ``custom_id`` unique in the file, ``method`` POST, the batch's endpoint as
``url``, a ``body`` object, and one model for the whole file. A file that breaks any of this
fails the batch (status ``failed``, its ``errors`` naming each line), and no line is
answered. A valid batch waits ``batch_delay_seconds``, then answers every line as
``POST /v1/responses`` would (same validation, generated output and usage). Lines whose
document contains ``batch_fail_on`` get a 500 in the error file; lines containing
``batch_expire_on`` are left unprocessed and reported as ``batch_expired``, which makes the
batch ``expired``, as the API does when the 24-hour window passes. A batch cancelled
before it runs ends ``cancelled`` with no lines answered.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from workers.simulator.wire import Responder, request_id
from workers.simulator.wire import error as _error

#: What an upload may be for, as ``POST /v1/files`` takes it.
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
#: The API's limits on one batch input file.
MAX_BATCH_LINES = 50_000
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data),
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed"}


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, Any] | None
    status: str = "validating"
    created_at: int = field(default_factory=lambda: int(time.time()))
    times: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0,
                                                            "failed": 0})
    errors: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0,
                                                           "output_tokens": 0})
    #: The model of the file's requests, once it is validated.
    model: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The batch as the API shows it: a field it has no value for yet is left out (the
        specification types them as strings and integers, not null), metadata aside."""
        shown = {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id, "completion_window": "24h",
            "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": self.created_at,
            "in_progress_at": self.times.get("in_progress"),
            "expires_at": self.created_at + 86400,
            "finalizing_at": self.times.get("finalizing"),
            "completed_at": self.times.get("completed"), "failed_at": self.times.get("failed"),
            "expired_at": self.times.get("expired"),
            "cancelling_at": self.times.get("cancelling"),
            "cancelled_at": self.times.get("cancelled"),
            "request_counts": self.counts, "metadata": self.metadata,
            "usage": {"input_tokens": self.usage["input_tokens"],
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": self.usage["output_tokens"],
                      "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": sum(self.usage.values())},
        }
        return {k: v for k, v in shown.items() if v is not None or k == "metadata"}


class BatchService:
    """Routes and state of ``/v1/files`` and ``/v1/batches``."""

    def __init__(self, simulator: Responder) -> None:
        self.simulator = simulator
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}", self.file_info)
        app.router.add_get("/v1/files/{file_id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches/{batch_id}", self.retrieve)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel)

    async def upload(self, request: web.Request) -> web.Response:
        if (denied := self.simulator.check_auth(request)) is not None:
            return denied
        form = await request.post()
        upload, purpose = form.get("file"), str(form.get("purpose", ""))
        if not isinstance(upload, web.FileField):
            return _error(400, "Missing required parameter: 'file'.", "invalid_request_error",
                          "missing_required_parameter", "file")
        if purpose not in PURPOSES:
            return _error(400, f"Invalid value: '{purpose}'. Supported values are: "
                          f"{', '.join(repr(p) for p in PURPOSES)}.", "invalid_request_error",
                          "invalid_value", "purpose")
        data = upload.file.read()
        if purpose == "batch" and len(data) > MAX_BATCH_FILE_BYTES:
            return _error(400, f"File is too large: {len(data)} bytes; batch input files may "
                          f"be at most {MAX_BATCH_FILE_BYTES} bytes.", "invalid_request_error",
                          "file_too_large", "file")
        stored = StoredFile(f"file-{secrets.token_hex(12)}", upload.filename, purpose, data)
        self.files[stored.id] = stored
        self.simulator.stats["files_uploaded"] += 1
        return web.json_response(stored.as_json())

    async def file_info(self, request: web.Request) -> web.Response:
        if (denied := self.simulator.check_auth(request)) is not None:
            return denied
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            return _not_found("file", request.match_info["file_id"])
        return web.json_response(stored.as_json())

    async def file_content(self, request: web.Request) -> web.Response:
        if (denied := self.simulator.check_auth(request)) is not None:
            return denied
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            return _not_found("file", request.match_info["file_id"])
        return web.Response(body=stored.data, content_type="application/octet-stream",
                            headers={"x-docpipe-simulator": "1"})

    async def create(self, request: web.Request) -> web.Response:
        if (denied := self.simulator.check_auth(request)) is not None:
            return denied
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.",
                          "invalid_request_error", None)
        for required in ("input_file_id", "endpoint", "completion_window"):
            if required not in body:
                return _error(400, f"Missing required parameter: '{required}'.",
                              "invalid_request_error", "missing_required_parameter", required)
        stored = self.files.get(str(body.get("input_file_id")))
        if stored is None or stored.purpose != "batch":
            return _error(400, f"Invalid 'input_file_id': '{body.get('input_file_id')}'. A "
                          "file uploaded with purpose 'batch' is required.",
                          "invalid_request_error", "invalid_value", "input_file_id")
        if body.get("endpoint") != "/v1/responses" or body.get("completion_window") != "24h":
            return _error(400, "Only endpoint '/v1/responses' and completion_window '24h' are "
                          "simulated.", "invalid_request_error", "invalid_value", "endpoint")
        lines = [line for line in stored.data.decode(errors="replace").splitlines()
                 if line.strip()]
        if len(lines) > MAX_BATCH_LINES:
            return _error(400, f"The batch has {len(lines)} requests; at most "
                          f"{MAX_BATCH_LINES} are allowed.", "invalid_request_error",
                          "too_many_requests", "input_file_id")
        batch = Batch(f"batch_{secrets.token_hex(12)}", stored.id, body["endpoint"],
                      body.get("metadata"))
        self.batches[batch.id] = batch
        self.simulator.stats["batches_created"] += 1
        task = asyncio.get_running_loop().create_task(self._run(batch, lines))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(batch.as_json())

    async def retrieve(self, request: web.Request) -> web.Response:
        if (denied := self.simulator.check_auth(request)) is not None:
            return denied
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _not_found("batch", request.match_info["batch_id"])
        return web.json_response(batch.as_json())

    async def cancel(self, request: web.Request) -> web.Response:
        if (denied := self.simulator.check_auth(request)) is not None:
            return denied
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _not_found("batch", request.match_info["batch_id"])
        if batch.status in ("validating", "in_progress"):
            batch.status = "cancelling"
            batch.times["cancelling"] = int(time.time())
        return web.json_response(batch.as_json())

    async def _run(self, batch: Batch, lines: list[str]) -> None:
        config = self.simulator.config
        requests, batch.errors = line_requests(lines, batch.endpoint)
        if batch.errors:
            batch.status, batch.times["failed"] = "failed", int(time.time())
            return
        batch.counts["total"] = len(requests)
        batch.model = str(requests[0][1].get("model")) if requests else None
        batch.status, batch.times["in_progress"] = "in_progress", int(time.time())
        ends = time.monotonic() + config.batch_delay_seconds
        while time.monotonic() < ends and batch.status != "cancelling":
            await asyncio.sleep(0.05)
        if batch.status == "cancelling":
            batch.status, batch.times["cancelled"] = "cancelled", int(time.time())
            return
        outputs: list[str] = []
        errors: list[str] = []
        expired = False
        for custom_id, body in requests:
            text = json.dumps(body)
            if config.batch_expire_on and config.batch_expire_on in text:
                expired = True
                batch.counts["failed"] += 1  # in the error file: the counts add up
                errors.append(json.dumps({
                    "id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id,
                    "response": None, "error": {
                        "code": "batch_expired", "message": "This request could not be "
                        "executed before the completion window expired."}}))
                continue
            status, payload = self._answer(body, fail=bool(
                config.batch_fail_on and config.batch_fail_on in text))
            record = json.dumps({
                "id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id,
                "response": {"status_code": status, "request_id": request_id(),
                             "body": payload}, "error": None})
            if status == 200:
                batch.counts["completed"] += 1
                batch.usage["input_tokens"] += payload["usage"]["input_tokens"]
                batch.usage["output_tokens"] += payload["usage"]["output_tokens"]
                outputs.append(record)
            else:
                batch.counts["failed"] += 1
                errors.append(record)
        now = int(time.time())
        batch.times["finalizing"] = now
        if outputs:
            batch.output_file_id = self._store("batch_output.jsonl", outputs)
        if errors:
            batch.error_file_id = self._store("batch_errors.jsonl", errors)
        batch.status = "expired" if expired else "completed"
        batch.times[batch.status] = now
        self.simulator.stats["batch_lines_ok"] += batch.counts["completed"]

    def _answer(self, body: dict[str, Any], *, fail: bool) -> tuple[int, dict[str, Any]]:
        if fail:
            return 500, {"error": {"message": "The server had an error processing your "
                                   "request.", "type": "server_error", "param": None,
                                   "code": None}}
        invalid = self.simulator.validate(body)
        if invalid is not None:
            assert isinstance(invalid.body, bytes)
            return invalid.status, json.loads(invalid.body)
        return 200, self.simulator.answer(body)

    def _store(self, name: str, lines: list[str]) -> str:
        stored = StoredFile(f"file-{secrets.token_hex(12)}", name, "batch_output",
                            ("\n".join(lines) + "\n").encode())
        self.files[stored.id] = stored
        return stored.id


def line_requests(lines: list[str], endpoint: str
                  ) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """The ``(custom_id, body)`` of each line of a batch input file, and the errors that fail
    the batch: one per line that breaks the file's rules, as ``errors.data`` lists them."""
    requests: list[tuple[str, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None

    def refuse(number: int, code: str, message: str, param: str | None = None) -> None:
        errors.append({"code": code, "line": number, "message": message, "param": param})

    for number, line in enumerate(lines, start=1):
        try:
            request = json.loads(line)
        except ValueError:
            refuse(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            continue
        if not isinstance(request, dict):
            refuse(number, "invalid_json_line", "This line is not a JSON object.")
            continue
        missing = [k for k in ("custom_id", "method", "url", "body") if k not in request]
        if missing:
            refuse(number, "missing_required_parameter",
                   f"Missing required parameter: '{missing[0]}'.", missing[0])
            continue
        custom_id, body = str(request["custom_id"]), request["body"]
        if custom_id in seen:
            refuse(number, "duplicate_custom_id", "The custom_id for this request is a "
                   "duplicate of another request. The custom_id parameter must be unique for "
                   "each request in a batch.", "custom_id")
        elif request["method"] != "POST":
            refuse(number, "invalid_method", f"Invalid method '{request['method']}': batch "
                   "requests must use POST.", "method")
        elif request["url"] != endpoint:
            refuse(number, "invalid_url", f"The URL provided for this request "
                   f"('{request['url']}') does not match the endpoint of the batch "
                   f"('{endpoint}').", "url")
        elif not isinstance(body, dict):
            refuse(number, "invalid_request", "The body of this request must be a JSON "
                   "object.", "body")
        elif model is not None and body.get("model") != model:
            refuse(number, "mismatched_model", f"The model '{body.get('model')}' of this "
                   f"request does not match the model '{model}' of the batch's other "
                   "requests: a batch may use only one model.", "body.model")
        else:
            model = model or body.get("model")
            requests.append((custom_id, body))
        seen.add(custom_id)
    return requests, errors


def _not_found(kind: str, name: str) -> web.Response:
    return _error(404, f"No such {kind}: '{name}'.", "invalid_request_error", None)
