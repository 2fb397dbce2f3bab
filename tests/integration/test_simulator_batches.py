"""The simulator's Files and Batch APIs, through the unmodified openai SDK."""

from __future__ import annotations

import json
import time

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


def test_a_batch_cancelled_before_it_runs_answers_nothing(simulator: SimulatorProcess,
                                                          client: openai.OpenAI) -> None:
    simulator.configure(batch_delay_seconds=2)
    upload = client.files.create(file=("in.jsonl", jsonl({"x": "Memo."})), purpose="batch")
    created = client.batches.create(input_file_id=upload.id, endpoint="/v1/responses",
                                    completion_window="24h")
    assert client.batches.cancel(created.id).status == "cancelling"
    batch = wait(client, created.id)
    assert batch.status == "cancelled" and batch.output_file_id is None
