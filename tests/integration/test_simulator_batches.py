"""The simulator's Files and Batch APIs, through the unmodified openai SDK."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from pipelines import SUMMARISE
from tests.support.services import SimulatorProcess


@pytest.fixture
def client(simulator: SimulatorProcess) -> openai.OpenAI:
    simulator.configure(batch_delay_seconds=0.2)
    return openai.OpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=0)


def jsonl(texts: dict[str, str]) -> bytes:
    return "".join(json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/responses",
                               "body": SUMMARISE.request(text)}) + "\n"
                   for cid, text in texts.items()).encode()


def wait(client: openai.OpenAI, batch_id: str) -> openai.types.Batch:
    deadline = time.monotonic() + 20
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "expired", "failed", "cancelled"):
            return batch
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.1)


def lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, object]]:
    if file_id is None:
        return {}
    text = client.files.content(file_id).text
    return {row["custom_id"]: row for row in map(json.loads, text.splitlines())}


def test_a_batch_answers_every_line_with_a_full_response(client: openai.OpenAI) -> None:
    upload = client.files.create(file=("in.jsonl", jsonl({"1": "Memo one.", "2": "Memo two."})),
                                 purpose="batch")
    created = client.batches.create(input_file_id=upload.id, endpoint="/v1/responses",
                                    completion_window="24h")
    batch = wait(client, created.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (2, 2)
    out = lines(client, batch.output_file_id)
    assert set(out) == {"1", "2"} and batch.error_file_id is None
    body = out["1"]["response"]["body"]  # type: ignore[index]
    SUMMARISE.validate_output(body["output"][0]["content"][0]["text"])
    assert body["usage"]["input_tokens"] > 0


def test_failed_and_expired_lines_go_to_the_error_file(simulator: SimulatorProcess,
                                                       client: openai.OpenAI) -> None:
    simulator.configure(batch_fail_on="BROKEN", batch_expire_on="LATE")
    upload = client.files.create(file=("in.jsonl", jsonl(
        {"a": "Fine memo.", "b": "BROKEN memo.", "c": "LATE memo."})), purpose="batch")
    batch = wait(client, client.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h").id)
    assert batch.status == "expired"
    assert set(lines(client, batch.output_file_id)) == {"a"}
    errors = lines(client, batch.error_file_id)
    assert errors["b"]["response"]["status_code"] == 500  # type: ignore[index]
    assert errors["c"]["response"] is None
    assert errors["c"]["error"]["code"] == "batch_expired"  # type: ignore[index]
    counts = batch.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (3, 1, 2)


def test_a_batch_cancelled_before_it_runs_answers_nothing(simulator: SimulatorProcess,
                                                          client: openai.OpenAI) -> None:
    simulator.configure(batch_delay_seconds=2)
    upload = client.files.create(file=("in.jsonl", jsonl({"x": "Memo."})), purpose="batch")
    created = client.batches.create(input_file_id=upload.id, endpoint="/v1/responses",
                                    completion_window="24h")
    assert client.batches.cancel(created.id).status == "cancelling"
    batch = wait(client, created.id)
    assert batch.status == "cancelled" and batch.output_file_id is None


def line(custom_id: str, text: str, **changes: object) -> dict[str, object]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses",
            "body": SUMMARISE.request(text)} | changes


def test_a_file_that_breaks_the_batch_rules_fails_the_batch_naming_each_line(
        client: openai.OpenAI) -> None:
    rows = [json.dumps(line("1", "Memo one.")), "{not json",
            json.dumps(line("1", "Memo again.")),
            json.dumps(line("3", "Memo three.", url="/v1/chat/completions")),
            json.dumps(line("4", "Memo four.", method="GET")),
            json.dumps(line("5", "Memo five.", body={**SUMMARISE.request("x"),
                                                    "model": "gpt-4.1"})),
            json.dumps({"custom_id": "6", "method": "POST", "url": "/v1/responses"}),
            json.dumps(line("7", "Memo seven."))]
    upload = client.files.create(file=("in.jsonl", "\n".join(rows).encode()), purpose="batch")
    batch = wait(client, client.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h").id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.errors is not None and batch.errors.data is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert found == [(2, "invalid_json_line", None), (3, "duplicate_custom_id", "custom_id"),
                     (4, "invalid_url", "url"), (5, "invalid_method", "method"),
                     (6, "mismatched_model", "body.model"),
                     (7, "missing_required_parameter", "body")]
    counts = batch.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (0, 0, 0)


def test_a_line_the_api_refuses_is_failed_in_the_error_file_and_counted(
        client: openai.OpenAI) -> None:
    rows = [json.dumps(line("ok", "Memo one.")),
            json.dumps(line("bad", "Memo two.", body={**SUMMARISE.request("Memo two."),
                                                      "temperature": 3}))]
    upload = client.files.create(file=("in.jsonl", "\n".join(rows).encode()), purpose="batch")
    batch = wait(client, client.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h").id)
    assert batch.status == "completed"
    counts = batch.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (2, 1, 1)
    refused = lines(client, batch.error_file_id)["bad"]["response"]
    assert refused["status_code"] == 400  # type: ignore[index]
    assert refused["body"]["error"]["param"] == "temperature"  # type: ignore[index]


def test_files_and_batches_check_the_key_and_a_malformed_create_is_a_400(
        simulator: SimulatorProcess, client: openai.OpenAI) -> None:
    upload = client.files.create(file=("in.jsonl", jsonl({"x": "Memo."})), purpose="batch")
    created = client.batches.create(input_file_id=upload.id, endpoint="/v1/responses",
                                    completion_window="24h")
    simulator.configure(api_key="sk-right")
    for call in (lambda: client.files.retrieve(upload.id),
                 lambda: client.files.content(upload.id),
                 lambda: client.batches.retrieve(created.id),
                 lambda: client.batches.cancel(created.id)):
        with pytest.raises(openai.AuthenticationError) as denied:
            call()
        assert denied.value.code == "invalid_api_key"
    simulator.configure(api_key=None)
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/batches", cast_to=object, body={"endpoint": "/v1/responses"})
    assert (info.value.code, info.value.param) == ("missing_required_parameter",
                                                   "input_file_id")
    assert info.value.request_id and info.value.request_id.startswith("req_")
    request = urllib.request.Request(
        f"{simulator.base_url}/batches", data=b"{not json", method="POST",
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as garbled:
        urllib.request.urlopen(request, timeout=10)
    assert garbled.value.code == 400
    assert garbled.value.headers["content-type"].startswith("application/json")
    assert garbled.value.headers["x-request-id"].startswith("req_")
    assert json.loads(garbled.value.read())["error"]["type"] == "invalid_request_error"
