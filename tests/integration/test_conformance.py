"""Every kind of answer the simulator gives, checked against OpenAI's OpenAPI specification.

The schemas are the vendored subset in ``tests/support/openapi`` (``Response``,
``ErrorResponse``, ``TokenCountsResource``, ``Batch``, ``OpenAIFile`` and the batch output
line, ``BatchRequestOutput``). Each answer is fetched over HTTP through the openai SDK, and
its raw JSON is validated, so a field the SDK would tolerate but the API never sends shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from pipelines import EXTRACT, SUMMARISE
from tests.support.openapi import SPEC, violations
from tests.support.services import SimulatorProcess
from workers.runtime.embedded import free_port

MEMO = ("Memo from Acme Widgets Ltd to Globex Corporation, 14 March 2025: the consulting "
        "invoice of $1,200.00 is due on 30 March. Contact Jane Smith.")
LOOKUP = {"type": "function", "name": "lookup_customer", "strict": True,
          "parameters": {"type": "object", "properties": {"name": {"type": "string"}},
                         "required": ["name"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    simulator = SimulatorProcess(port=free_port(),
                                 log_path=tmp_path_factory.mktemp("sim") / "simulator.log")
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: SimulatorProcess) -> Iterator[openai.OpenAI]:
    sim.configure(refusal_rate=0.0, truncate_rate=0.0, error_rate=0.0, rpm=None, tpm=None,
                  quota_exhausted=False, api_key=None, batch_delay_seconds=0.2,
                  batch_fail_on=None, batch_expire_on=None)
    with openai.OpenAI(api_key="sk-test", base_url=sim.base_url, max_retries=0) as client:
        yield client


def conforms(schema: str, answer: Any) -> None:
    found = violations(schema, answer)
    assert not found, f"{schema}: {found[:5]}"


def answer_of(call: Callable[[], Any]) -> tuple[int, Any]:
    """The status and JSON body of a call, whether it succeeded or not."""
    try:
        raw = call()
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.json()
    return raw.status_code, raw.http_response.json()


def create(client: openai.OpenAI, body: dict[str, Any]) -> Callable[[], Any]:
    """``POST /v1/responses`` of ``body`` as sent, fields the SDK does not name included."""
    rest = {k: v for k, v in body.items() if k not in ("model", "input")}
    return lambda: client.responses.with_raw_response.create(
        model=body["model"], input=body["input"], extra_body=rest)


def test_the_subset_names_its_source() -> None:
    source = SPEC["info"]["x-source"]
    assert source["repository"] == "https://github.com/openai/openai-openapi"
    assert len(source["commit"]) == 40 and source["licence"] == "MIT"
    assert {"Response", "ErrorResponse", "TokenCountsResource", "Batch", "OpenAIFile",
            "BatchRequestOutput"} <= SPEC["components"]["schemas"].keys()


@pytest.mark.parametrize(("config", "changes"), [
    ({}, {}),
    ({}, {"model": "o4-mini", "reasoning": {"effort": "low"}}),
    ({"truncate_rate": 1.0}, {}),
    ({"refusal_rate": 1.0}, {}),
    ({}, {"tools": [LOOKUP], "tool_choice": "required"}),
    ({}, {"tools": [{"type": "web_search"}]}),
    ({}, {"service_tier": "flex", "metadata": {"run": "7"}}),
], ids=["completed", "reasoning-model", "incomplete", "refusal", "function-call",
        "web-search", "flex-and-metadata"])
def test_every_kind_of_response_conforms(sim: SimulatorProcess, client: openai.OpenAI,
                                         config: dict[str, Any],
                                         changes: dict[str, Any]) -> None:
    sim.configure(**config)
    status, body = answer_of(create(client, {**SUMMARISE.request(MEMO), **changes}))
    assert status == 200, body
    conforms("Response", body)


def test_a_response_with_an_image_conforms(client: openai.OpenAI) -> None:
    from pipelines.media import prepare_image
    from tests.support.files import make_image

    image = prepare_image("photo.png", make_image(64, 64), "image/png")
    status, body = answer_of(create(client, EXTRACT.request("", attachments=(image,))))
    assert status == 200
    conforms("Response", body)


@pytest.mark.parametrize(("config", "changes", "status"), [
    ({}, {"temperature": 3}, 400),
    ({}, {"model": "o4-mini", "temperature": 0.2}, 400),
    ({}, {"foo": 1}, 400),
    ({"api_key": "sk-right"}, {}, 401),
    ({}, {"model": "gpt-nope"}, 404),
    ({"rpm": 1}, {}, 429),
    ({"tpm": 100}, {}, 429),
    ({"quota_exhausted": True}, {}, 429),
    ({"error_rate": 1.0}, {}, None),
], ids=["out-of-range", "unsupported-parameter", "unknown-parameter", "bad-key",
        "unknown-model", "rate-limited", "too-large", "quota", "server-error"])
def test_every_kind_of_error_conforms(sim: SimulatorProcess, client: openai.OpenAI,
                                      config: dict[str, Any], changes: dict[str, Any],
                                      status: int | None) -> None:
    sim.configure(**config)
    got = None
    for _ in range(2):  # the rate limit refuses the second call
        got, body = answer_of(create(client, {**SUMMARISE.request(MEMO), **changes}))
        if got != 200:
            break
    assert got == status if status else got in (500, 502, 503)
    conforms("ErrorResponse", body)


def test_an_unknown_route_and_a_malformed_batch_conform(client: openai.OpenAI) -> None:
    for path, body in (("/nowhere", {}), ("/batches", {"endpoint": "/v1/responses"})):
        with pytest.raises(openai.APIStatusError) as info:
            client.post(path, cast_to=object, body=body)
        status, answer = info.value.status_code, info.value.response.json()
        assert status in (400, 404)
        conforms("ErrorResponse", answer)


def test_token_counts_conform(client: openai.OpenAI) -> None:
    status, body = answer_of(lambda: client.responses.input_tokens.with_raw_response.count(
        model="gpt-4.1-mini", input=MEMO))
    assert status == 200
    conforms("TokenCountsResource", body)


def _wait(client: openai.OpenAI, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        status, body = answer_of(lambda: client.batches.with_raw_response.retrieve(batch_id))
        assert status == 200
        if body["status"] in ("completed", "failed", "expired", "cancelled"):
            return dict(body)
        assert time.monotonic() < deadline, body["status"]
        time.sleep(0.05)


def _upload(client: openai.OpenAI, lines: list[dict[str, Any]]) -> dict[str, Any]:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    status, body = answer_of(lambda: client.files.with_raw_response.create(
        file=("in.jsonl", data), purpose="batch"))
    assert status == 200
    conforms("OpenAIFile", body)
    return dict(body)


def _line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses",
            "body": {**SUMMARISE.request(text), **body}}


def test_files_batches_and_their_lines_conform(sim: SimulatorProcess,
                                               client: openai.OpenAI) -> None:
    sim.configure(batch_fail_on="BROKEN", batch_expire_on="LATE")
    upload = _upload(client, [_line("ok", MEMO), _line("bad", MEMO, temperature=3),
                              _line("broken", "BROKEN memo."), _line("late", "LATE memo.")])
    status, info = answer_of(lambda: client.files.with_raw_response.retrieve(upload["id"]))
    assert status == 200
    conforms("OpenAIFile", info)
    status, created = answer_of(lambda: client.batches.with_raw_response.create(
        input_file_id=upload["id"], endpoint="/v1/responses", completion_window="24h"))
    assert status == 200
    conforms("Batch", created)
    ended = _wait(client, created["id"])
    assert ended["status"] == "expired"
    conforms("Batch", ended)
    kinds = set()
    for file_id in (ended["output_file_id"], ended["error_file_id"]):
        for row in client.files.content(file_id).text.splitlines():
            line = json.loads(row)
            conforms("BatchRequestOutput", line)
            response = line["response"]
            kinds.add(response["status_code"] if response else line["error"]["code"])
            if response and response["status_code"] == 200:
                conforms("Response", response["body"])
            elif response:
                conforms("ErrorResponse", response["body"])
    assert kinds == {200, 400, 500, "batch_expired"}


def test_failed_and_cancelled_batches_conform(sim: SimulatorProcess,
                                              client: openai.OpenAI) -> None:
    invalid = _upload(client, [_line("1", MEMO), _line("1", MEMO)])
    failed = _wait(client, client.batches.create(
        input_file_id=invalid["id"], endpoint="/v1/responses", completion_window="24h").id)
    assert failed["status"] == "failed"
    conforms("Batch", failed)
    sim.configure(batch_delay_seconds=5)
    upload = _upload(client, [_line("1", MEMO)])
    created = client.batches.create(input_file_id=upload["id"], endpoint="/v1/responses",
                                    completion_window="24h")
    status, cancelling = answer_of(
        lambda: client.batches.with_raw_response.cancel(created.id))
    assert status == 200 and cancelling["status"] == "cancelling"
    conforms("Batch", cancelling)
    cancelled = _wait(client, created.id)
    assert cancelled["status"] == "cancelled"
    conforms("Batch", cancelled)


#: Examples schemathesis draws for each operation: bounded, so the pass costs seconds.
FUZZ_EXAMPLES = 40
OPERATIONS = [(path, method.upper()) for path, methods in SPEC["paths"].items()
              for method in methods]


@pytest.mark.parametrize(("path", "method"), OPERATIONS,
                         ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_a_bounded_schemathesis_pass_finds_no_answer_off_the_spec(
        sim: SimulatorProcess, client: openai.OpenAI, path: str, method: str) -> None:
    """Requests drawn from each operation's own schema (most of them wrong in some way):
    every answer is JSON with a request id, never a server error of the simulator's own,
    an error in the API's error shape, and a success in the documented shape."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    operation = schemathesis.openapi.from_dict(SPEC)[path][method]
    documented = operation.definition.raw["responses"]["200"]["content"]
    success = next(iter(documented.values()))["schema"].get("$ref", "").rsplit("/", 1)[-1]
    seen: set[int] = set()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    # The specification's file object lists every upload purpose but "evals", which its
    # upload request takes: an upload for evals could only break the spec's own answer.
    @given(case=operation.as_strategy().filter(
        lambda case: not (isinstance(case.body, dict) and case.body.get("purpose") == "evals")))
    def answer_conforms(case: Any) -> None:
        response = case.call(base_url=f"{sim.base_url.removesuffix('/v1')}/v1",
                             headers={"Authorization": "Bearer sk-test"}, timeout=30)
        seen.add(response.status_code)
        assert response.status_code < 500, (case.body, response.text[:500])
        assert response.headers["x-request-id"][0].startswith("req_")
        if response.status_code >= 400:
            conforms("ErrorResponse", response.json())
        elif success:
            conforms(success, response.json())

    answer_conforms()
    assert seen, "schemathesis drew no request"
