"""A Responses API simulator over real HTTP, for development, tests and load tests.

It answers ``POST /v1/responses`` and ``POST /v1/responses/input_tokens`` closely enough that
the unmodified openai SDK parses every reply: strict-schema output generated from the input
text, usage, ``x-ratelimit-*`` headers, real 429 bodies, and injected faults. ``/_sim/config``
changes faults at run time and ``/_sim/stats`` counts calls per document, so tests can prove
what was (not) paid for.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import secrets
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiohttp import web

from workers.simulator.batches import MAX_BATCH_FILE_BYTES, BatchService
from workers.simulator.generate import generate
from workers.simulator.inputs import document_text, input_key, media_error
from workers.simulator.latency import draw_ms
from workers.simulator.limits import Limits
from workers.simulator.models import MODELS, base_model
from workers.simulator.requests import refusal
from workers.simulator.tools import function_call, hosted_calls
from workers.simulator.usage import admission_estimate, count, input_tokens
from workers.simulator.wire import api_errors
from workers.simulator.wire import error as _error
from workers.simulator.wire import request_id as new_request_id

log = logging.getLogger("docpipe.simulator")

#: Prefixes at least this long are cached, in steps of CACHE_STEP tokens (like the API).
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128


@dataclass
class SimulatorConfig:
    """Behaviour of the simulator. Rates are probabilities per request."""

    rpm: int | None = None
    tpm: int | None = None
    #: Seconds of each limit let through at once: 60 is a minute's bucket; less plays an API
    #: that enforces its per-minute limits over shorter periods.
    limit_window_seconds: float = 60.0
    latency_ms: float = 50.0
    latency_sigma: float = 0.5
    #: Draw each request's latency from its input, not in the order requests come: the same
    #: document meets the same latency whichever client sends it, in whatever order, so two
    #: clients compared on one corpus meet the same slow calls.
    latency_per_input: bool = False
    seed: int = 0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    #: retry-after of injected 429s, in ms (None: 200 to 1200 ms at random).
    rate_limit_retry_ms: float | None = None
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    reset_rate: float = 0.0
    refusal_rate: float = 0.0
    truncate_rate: float = 0.0
    quota_exhausted: bool = False
    #: Answer insufficient_quota once this many requests were admitted (None: never).
    quota_after: int | None = None
    #: Every request answered with this error: {"status", "code", "type", "message"}.
    force_error: dict[str, Any] | None = None
    #: Play a model that obeys injected instructions: for a document containing this text,
    #: answer off the schema, with an extra field that leaks the request's instructions.
    obey_injection: str | None = None
    #: Hang (like a timeout) on any request whose document contains this text.
    hang_on: str | None = None
    #: Answer any request whose document contains this text with an output of
    #: ``bloat_mb`` megabytes, streamed: a body that blows the memory of whoever parses it.
    bloat_on: str | None = None
    bloat_mb: int = 512
    #: Share of ``service_tier: "flex"`` requests refused with 429 Resource Unavailable.
    flex_unavailable_rate: float = 0.0
    #: Seconds a batch waits before it answers its lines.
    batch_delay_seconds: float = 1.0
    #: Batch lines whose body contains this text get a 500 in the error file.
    batch_fail_on: str | None = None
    #: Batch lines whose body contains this text expire unprocessed (the batch: ``expired``).
    batch_expire_on: str | None = None
    #: Truncate any output whose request allows fewer max_output_tokens than this.
    truncate_below_tokens: int = 0
    api_key: str | None = None


class Simulator:
    """The simulator's state: config, rate-limit buckets, counters and the cache."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        # Flex capacity draws from its own stream: drawn from the shared one, which requests'
        # other draws interleave with as they arrive, a run of 20 calls at a rate of 0.3
        # could meet no refusal at all.
        self.flex_rng = random.Random(f"{config.seed}:flex")
        self.limits = Limits(config.rpm, config.tpm, config.limit_window_seconds)
        #: Each model's own limits, from the model table, when none are configured.
        self.model_limits: dict[str, Limits] = {}
        self.stats: Counter[str] = Counter()
        #: Requests being answered now.
        self.in_flight = 0
        self.calls_by_input: Counter[str] = Counter()
        self.ok_by_input: Counter[str] = Counter()
        self.prefix_seen: dict[str, float] = {}
        self.batches = BatchService(self)

    def reconfigure(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(SimulatorConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for key, value in changes.items():
            setattr(self.config, key, value)
        if {"rpm", "tpm", "limit_window_seconds"} & changes.keys():
            self.limits = Limits(self.config.rpm, self.config.tpm,
                                 self.config.limit_window_seconds)
            self.model_limits.clear()
        if "seed" in changes:
            self.rng = random.Random(self.config.seed)
            self.flex_rng = random.Random(f"{self.config.seed}:flex")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BATCH_FILE_BYTES + 1024 * 1024,
                              middlewares=[api_errors])
        app.router.add_post("/v1/responses", self.responses)
        self.batches.add_routes(app)
        app.router.add_post("/v1/responses/input_tokens", self.input_tokens)
        app.router.add_get("/_sim/stats", self.get_stats)
        app.router.add_post("/_sim/config", self.post_config)
        app.router.add_get("/_sim/health", self.health)
        return app

    # -- control endpoints -----------------------------------------------------------------

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "simulator": True})

    async def get_stats(self, request: web.Request) -> web.Response:
        """Counters, requests being answered now, and (unless ``?brief=1``, for a poller)
        the calls per document and the configuration."""
        stats: dict[str, Any] = {"counters": dict(self.stats), "in_flight": self.in_flight}
        if request.query.get("brief") != "1":
            stats |= {"calls_by_input": dict(self.calls_by_input),
                      "ok_by_input": dict(self.ok_by_input),
                      "config": asdict(self.config) | {"api_key": None}}
        return web.json_response(stats)

    async def post_config(self, request: web.Request) -> web.Response:
        try:
            self.reconfigure(await request.json())
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc), "invalid_request_error", "bad_config")
        return web.json_response(asdict(self.config) | {"api_key": None})

    # -- the API ---------------------------------------------------------------------------

    def limits_for(self, model: Any) -> Limits | None:
        """The limits a request for ``model`` is charged to: the configured ones, shared by
        every model, or else the model's own from the model table; None for a model the API
        does not know (its answer carries no ``x-ratelimit-*`` headers)."""
        if self.config.rpm or self.config.tpm:
            return self.limits
        base = base_model(str(model))
        if base is None:
            return None
        found = self.model_limits.get(base)
        if found is None:
            known = MODELS[base]
            found = self.model_limits[base] = Limits(known.rpm, known.tpm,
                                                     self.config.limit_window_seconds)
        return found

    def check_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        key = header.removeprefix("Bearer ").strip()
        if not key or (self.config.api_key and key != self.config.api_key):
            shown = (key[:8] + "*****" + key[-4:]) if len(key) > 12 else "*****"
            return _error(401, f"Incorrect API key provided: {shown}. You can find your API key "
                          "at https://platform.openai.com/account/api-keys.",
                          "invalid_request_error", "invalid_api_key")
        return None

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "We could not parse the JSON body of your request.",
                          "invalid_request_error", None)
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.",
                          "invalid_request_error", None)
        return body

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        """The API's error answer to an invalid request body, or None if it is valid."""
        if (refused := refusal(body)) is not None:
            return _error(refused.status, refused.message, refused.type, refused.code,
                          refused.param)
        return media_error(body)

    async def input_tokens(self, request: web.Request) -> web.Response:
        if (denied := self.check_auth(request)) is not None:
            return denied
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        return web.json_response({"object": "response.input_tokens",
                                  "input_tokens": input_tokens(body)})

    async def responses(self, request: web.Request) -> web.StreamResponse:
        self.stats["requests"] += 1
        request_id = new_request_id()
        base_headers = {"x-request-id": request_id, "openai-version": "2020-10-01",
                        "x-docpipe-simulator": "1"}
        self.in_flight += 1
        try:
            response = await self._responses(request, base_headers)
        finally:
            self.in_flight -= 1
        self.stats[f"status_{response.status}"] += 1
        return response

    async def _responses(self, request: web.Request, headers: dict[str, str]
                         ) -> web.StreamResponse:
        if (denied := self.check_auth(request)) is not None:
            denied.headers.update(headers)
            return denied
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        key = input_key(body)
        self.calls_by_input[key] += 1
        limits = self.limits_for(body.get("model")) or Limits(None, None)
        if (invalid := self.validate(body)) is not None:
            invalid.headers.update(headers | limits.headers())
            return invalid
        if (refused := self._refused(body, headers, limits)) is not None:
            return refused
        max_output = int(body.get("max_output_tokens") or 4096)
        charge = admission_estimate(body) + max_output
        if (limited := self._over_limit(body, limits, charge, headers)) is not None:
            return limited
        self.stats["admitted"] += 1
        if (failed := await self._fault(request, body, headers, limits)) is not None:
            return failed
        await self._latency(key)
        payload = self._completed(body, input_tokens(body), max_output)
        self._settle(limits, payload["usage"], charge, key)
        headers |= limits.headers()
        headers["openai-processing-ms"] = str(int(self.config.latency_ms))
        if self.config.bloat_on and self.config.bloat_on in document_text(body):
            return await self._bloated(request, payload, headers)
        return web.json_response(payload, headers=headers)

    def _refused(self, body: dict[str, Any], headers: dict[str, str], limits: Limits
                 ) -> web.Response | None:
        """Refusals before any budget is charged: a forced error, no quota, no flex capacity."""
        config = self.config
        if not (config.force_error or config.quota_exhausted or config.quota_after is not None
                or config.flex_unavailable_rate):
            return None
        headers = headers | limits.headers()
        if config.force_error:
            forced = config.force_error
            return _error(int(forced.get("status", 400)), str(forced.get("message", "forced")),
                          str(forced.get("type", "invalid_request_error")), forced.get("code"),
                          forced.get("param"), headers=headers)
        admitted = self.stats["admitted"]
        if config.quota_exhausted or (config.quota_after is not None
                                      and admitted >= config.quota_after):
            return _error(429, "You exceeded your current quota, please check your plan and "
                          "billing details. For more information on this error, read the docs: "
                          "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                          "insufficient_quota", "insufficient_quota", headers=headers)
        if body.get("service_tier") == "flex" and config.flex_unavailable_rate and \
                self.flex_rng.random() < config.flex_unavailable_rate:
            # Not charged and not a rate limit: no x-ratelimit headers move. The docs name the
            # message only; the code here is a guess, which is why docpipe matches both.
            self.stats["flex_unavailable"] += 1
            return _error(429, "Resource Unavailable: there is no flex processing capacity for "
                          "this request right now. Retry later, or send service_tier 'auto'.",
                          "invalid_request_error", "resource_unavailable", headers=headers)
        return None

    def _over_limit(self, body: dict[str, Any], limits: Limits, charge: int,
                    headers: dict[str, str]) -> web.Response | None:
        """The 429 of a request the buckets (or an injected rate limit) refuse."""
        config = self.config
        refused = limits.admit(charge)
        injected = config.rate_limit_rate and self.rng.random() < config.rate_limit_rate
        if refused is None and injected:
            refused = ("requests", config.rate_limit_retry_ms / 1000
                       if config.rate_limit_retry_ms else 0.2 + self.rng.random())
        return self._rate_limited(body, limits, refused, charge, headers) if refused else None

    async def _fault(self, request: web.Request, body: dict[str, Any], headers: dict[str, str],
                     limits: Limits) -> web.Response | None:
        """An injected fault of an admitted call: a reset, a hang, or a 5xx."""
        config = self.config
        roll = self.rng.random()
        if roll < config.reset_rate:
            self.stats["resets"] += 1
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("simulated connection reset")
        roll -= config.reset_rate
        if roll < config.timeout_rate or (config.hang_on and config.hang_on in
                                           document_text(body)):
            self.stats["timeouts"] += 1
            await asyncio.sleep(config.timeout_seconds)
        roll -= config.timeout_rate
        if roll < config.error_rate:
            await self._latency()
            status = self.rng.choice((500, 502, 503))
            message = ("The server had an error while processing your request. Sorry about that!"
                       if status == 500 else "The engine is currently overloaded, please try "
                       "again later.")
            return _error(status, message, "server_error", None,
                          headers=headers | limits.headers())
        return None

    def _settle(self, limits: Limits, usage: dict[str, Any], charge: int, key: str) -> None:
        """True the admission charge up (or down) to what the call really used; count it."""
        used = usage["input_tokens"] + usage["output_tokens"]
        if (bucket := limits.tokens) is not None:
            bucket.level = min(bucket.capacity, bucket.level + charge - used)
        self.stats["ok"] += 1
        self.stats["ok_tokens"] += used
        self.ok_by_input[key] += 1

    async def _bloated(self, request: web.Request, payload: dict[str, Any],
                       headers: dict[str, str]) -> web.StreamResponse:
        """Stream ``payload`` with its output text padded to ``bloat_mb`` megabytes."""
        marker = "@@bloat-8f3c@@"
        payload["output"][-1]["content"][0]["text"] = marker
        head, tail = json.dumps(payload).encode().split(marker.encode())
        chunk, chunks = b"x" * (1024 * 1024), self.config.bloat_mb
        response = web.StreamResponse(headers=headers | {"content-type": "application/json"})
        response.content_length = len(head) + len(tail) + len(chunk) * chunks
        await response.prepare(request)
        await response.write(head)
        for _ in range(chunks):
            await response.write(chunk)
        await response.write(tail)
        await response.write_eof()
        return response

    async def _latency(self, key: str | None = None) -> None:
        delay = self.latency_ms(key)
        if delay > 0:
            await asyncio.sleep(min(delay, 60_000) / 1000)

    def latency_ms(self, key: str | None = None) -> float:
        """The next request's latency, drawn in order, or from the request's input key with
        ``latency_per_input``."""
        rng = random.Random(f"{self.config.seed}:{key}") \
            if self.config.latency_per_input and key is not None else self.rng
        return draw_ms(self.config.latency_ms, self.config.latency_sigma, rng)

    def _rate_limited(self, body: dict[str, Any], limits: Limits, refused: tuple[str, float],
                      charge: int, headers: dict[str, str]) -> web.Response:
        kind, wait = refused
        self.stats["rate_limited"] += 1
        model = body.get("model")
        bucket = limits.requests if kind == "requests" else limits.tokens
        limit = int(bucket.capacity) if bucket else 0
        used = int(bucket.capacity - bucket.level) if bucket else 0
        label = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        headers = headers | limits.headers()
        if not math.isfinite(wait):  # larger than the whole budget: waiting cannot help
            self.stats["too_large"] += 1
            return _error(429, f"Request too large for {model} in organization org-simulator "
                          f"on {label}: Limit {limit}, Requested {charge}. The input or output "
                          "tokens must be reduced in order to run successfully. Visit "
                          "https://platform.openai.com/account/rate-limits to learn more.",
                          kind, "rate_limit_exceeded", headers=headers)
        requested = 1 if kind == "requests" else charge
        human = f"{wait * 1000:.0f}ms" if wait < 1 else f"{wait:.2f}s"
        message = (f"Rate limit reached for {model} in organization org-simulator on {label}: "
                   f"Limit {limit}, Used {used}, Requested {requested}. Please try again in "
                   f"{human}. Visit https://platform.openai.com/account/rate-limits to learn more.")
        headers |= {"retry-after": str(max(1, math.ceil(wait))),
                    "retry-after-ms": str(max(1, int(wait * 1000)))}
        return _error(429, message, kind, "rate_limit_exceeded", headers=headers)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response object for a valid request, as ``POST /v1/responses`` answers it."""
        return self._completed(body, input_tokens(body),
                               int(body.get("max_output_tokens") or 4096))

    def _completed(self, body: dict[str, Any], input_tokens: int, max_output: int
                   ) -> dict[str, Any]:
        config = self.config
        fmt = (body.get("text") or {}).get("format") or {"type": "text"}
        document = document_text(body)
        if fmt.get("type") == "json_schema":
            answer = generate(fmt["schema"], document)
            if config.obey_injection and config.obey_injection in document:
                answer["leaked_instructions"] = body.get("instructions")
            text = json.dumps(answer, ensure_ascii=False)
        else:
            text = " ".join(document.split()[:60])
        status, incomplete = "completed", None
        part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": [],
                                "logprobs": []}
        output_tokens = count(text)
        roll = self.rng.random()
        if roll < config.refusal_rate:
            part = {"type": "refusal", "refusal": "I'm sorry, I cannot assist with that request."}
            output_tokens = 11
        elif (roll < config.refusal_rate + config.truncate_rate or output_tokens > max_output
              or max_output < config.truncate_below_tokens):
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
            cut = max(1, len(text) * min(max_output, output_tokens) // max(output_tokens, 1) // 2)
            part["text"] = text[:cut]
            output_tokens = min(max_output, output_tokens)
        message: dict[str, Any] = {
            "id": f"msg_{secrets.token_hex(24)}", "type": "message",
            "status": "completed" if status == "completed" else "incomplete",
            "role": "assistant", "content": [part]}
        output = [*hosted_calls(body, document), message]
        if (call := function_call(body, document)) is not None:
            status, incomplete, output = "completed", None, [call]
            output_tokens = count(call["arguments"])
        cached = self._cached_tokens(body)
        now = int(time.time())
        return {
            "id": f"resp_{secrets.token_hex(24)}",
            "object": "response",
            "created_at": now,
            "completed_at": now,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": body.get("service_tier") if body.get("service_tier") in
            ("flex", "scale", "priority") else "default",
            "store": bool(body.get("store", True)),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": fmt, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "metadata": {},
            "background": False,
            "prompt_cache_key": body.get("prompt_cache_key"),
            "safety_identifier": None,
        }

    def _cached_tokens(self, body: dict[str, Any]) -> int:
        """Emulate prompt caching: a shared prefix of 1,024+ tokens seen recently is cached."""
        fmt = (body.get("text") or {}).get("format") or {}
        prefix = json.dumps([body.get("instructions"), fmt.get("schema")], sort_keys=True)
        tokens = count(prefix)
        if tokens < CACHE_MIN_TOKENS:
            return 0
        key = hashlib.sha256(f"{body.get('prompt_cache_key')}|{prefix}".encode()).hexdigest()
        now = time.monotonic()
        seen = self.prefix_seen.get(key)
        self.prefix_seen[key] = now
        if seen is None or now - seen > 600:
            return 0
        return (tokens // CACHE_STEP) * CACHE_STEP


def run(config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 8700) -> None:
    """Serve until interrupted."""
    simulator = Simulator(config)
    web.run_app(simulator.app(), host=host, port=port, print=None, access_log=None,
                handle_signals=True)
