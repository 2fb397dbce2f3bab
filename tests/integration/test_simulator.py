"""The simulator over real HTTP, called through the unmodified openai SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from jsonschema import Draft202012Validator
from openai.types.responses import Response

from pipelines import EXTRACT, SUMMARISE
from tests.support.requests import CASES, Verdict, changed
from tests.support.schemas import CORPUS, TREE
from tests.support.services import SimulatorProcess
from workers.errors import PermanentAPIError
from workers.llm.errors import classify
from workers.runtime.embedded import free_port
from workers.simulator import input_key

INVOICE = ("Invoice 77 from Acme Widgets Ltd to Globex Corporation. Date: 14 March 2025. "
           "Consulting services: $1,200.00. Amount due: $1,200.00. Contact Jane Smith.")


@pytest.fixture
def client(simulator: SimulatorProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=0)


class TestResponses:
    def test_output_fits_the_strict_schema_and_comes_from_the_text(self, client: openai.OpenAI
                                                                   ) -> None:
        raw = client.responses.with_raw_response.create(**EXTRACT.request(INVOICE))
        response = raw.parse()
        assert response.status == "completed"
        output = EXTRACT.validate_output(response.output_text)
        assert output["document_type"] == "invoice"
        assert output["date"] == "2025-03-14"
        names = {p["name"] for p in output["parties"]}
        assert {"Acme Widgets Ltd", "Globex Corporation", "Jane Smith"} <= names
        assert all(p["name"] in INVOICE for p in output["parties"])
        assert [a["value"] for a in output["amounts"]] == [1200.0, 1200.0]
        assert raw.request_id and raw.request_id.startswith("req_")
        assert response.id.startswith("resp_")

    def test_summary_is_extractive_and_deterministic(self, client: openai.OpenAI) -> None:
        first = SUMMARISE.validate_output(
            client.responses.create(**SUMMARISE.request(INVOICE)).output_text)
        second = SUMMARISE.validate_output(
            client.responses.create(**SUMMARISE.request(INVOICE)).output_text)
        assert first == second
        assert first["summary"] and first["summary"][:20] in INVOICE
        assert first["language"] == "en"

    def test_usage_is_plausible(self, client: openai.OpenAI) -> None:
        response = client.responses.create(**SUMMARISE.request(INVOICE))
        usage = response.usage
        assert usage is not None
        assert usage.input_tokens > 50
        assert usage.output_tokens == pytest.approx(len(response.output_text) / 4, rel=0.6)
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
        assert usage.input_tokens_details.cached_tokens == 0

    def test_input_tokens_endpoint(self, client: openai.OpenAI) -> None:
        counted = client.responses.input_tokens.count(**{
            k: v for k, v in SUMMARISE.request(INVOICE).items()
            if k in ("model", "input", "instructions", "text")})
        assert counted.input_tokens > 50

    def test_rate_limit_headers_on_success(self, simulator: SimulatorProcess,
                                           client: openai.OpenAI) -> None:
        simulator.configure(rpm=100, tpm=1_000_000)
        raw = client.responses.with_raw_response.create(**SUMMARISE.request("hello there"))
        assert raw.headers["x-ratelimit-limit-requests"] == "100"
        assert int(raw.headers["x-ratelimit-remaining-requests"]) == 99
        assert raw.headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))


class TestRateLimitHeaders:
    """The x-ratelimit-* headers come on every answer for a known model, as the API sends
    them: from the model table when no limits are configured."""

    def test_every_answer_for_a_known_model_carries_its_limits(
            self, simulator: SimulatorProcess, client: openai.OpenAI) -> None:
        raw = client.responses.with_raw_response.create(**SUMMARISE.request("hello there"))
        assert raw.headers["x-ratelimit-limit-requests"] == "30000"  # gpt-4.1-mini's
        assert raw.headers["x-ratelimit-limit-tokens"] == "150000000"
        assert int(raw.headers["x-ratelimit-remaining-requests"]) == 29999
        other = client.responses.with_raw_response.create(
            **{**SUMMARISE.request("hello there"), "model": "gpt-4.1"})
        assert other.headers["x-ratelimit-limit-requests"] == "10000"  # its own bucket
        assert int(other.headers["x-ratelimit-remaining-requests"]) == 9999

        with pytest.raises(openai.BadRequestError) as bad:
            client.responses.create(**{**SUMMARISE.request("x"), "temperature": 3})
        refusals: list[openai.APIStatusError] = [bad.value]
        simulator.configure(quota_exhausted=True)
        with pytest.raises(openai.RateLimitError) as quota:
            client.responses.create(**SUMMARISE.request("x"))
        refusals.append(quota.value)
        simulator.configure(quota_exhausted=False, error_rate=1.0)
        with pytest.raises(openai.InternalServerError) as failed:
            client.responses.create(**SUMMARISE.request("x"))
        refusals.append(failed.value)
        for error in refusals:
            assert error.response.headers["x-ratelimit-limit-requests"] == "30000", error
            assert "x-ratelimit-reset-tokens" in error.response.headers

        # No organisation's limits without a key, and no model's for an unknown model.
        simulator.configure(error_rate=0.0, api_key="sk-right")
        with pytest.raises(openai.AuthenticationError) as denied:
            client.responses.create(**SUMMARISE.request("x"))
        simulator.configure(api_key=None)
        with pytest.raises(openai.NotFoundError) as missing:
            client.responses.create(**{**SUMMARISE.request("x"), "model": "gpt-nope"})
        for error in (denied.value, missing.value):
            assert not any(h.startswith("x-ratelimit") for h in error.response.headers)

    def test_a_request_larger_than_the_tpm_budget_is_too_large_not_a_wait(
            self, simulator: SimulatorProcess, client: openai.OpenAI) -> None:
        simulator.configure(tpm=1000)
        body = {**SUMMARISE.request("a short memo"), "max_output_tokens": 2000}
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(**body)
        error = info.value
        assert error.code == "rate_limit_exceeded" and error.type == "tokens"
        message = error.body["message"]  # type: ignore[index]
        assert message.startswith("Request too large for gpt-4.1-mini in organization "
                                  "org-simulator on tokens per min (TPM): Limit 1000, "
                                  "Requested ")
        assert "must be reduced in order to run successfully" in message
        assert "retry-after" not in error.response.headers
        classified = classify(error)
        assert type(classified) is PermanentAPIError
        assert classified.code == "request_too_large"
        # A request within the budget goes.
        assert client.responses.create(**{**body, "max_output_tokens": 100}).status


class TestErrors:
    def test_rpm_limit_answers_429_with_the_real_body_and_headers(
        self, simulator: SimulatorProcess, client: openai.OpenAI
    ) -> None:
        simulator.configure(rpm=2)
        client.responses.create(**SUMMARISE.request("a"))
        client.responses.create(**SUMMARISE.request("b"))
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(**SUMMARISE.request("c"))
        error = info.value
        assert error.code == "rate_limit_exceeded" and error.type == "requests"
        assert "on requests per min (RPM): Limit 2" in error.message
        assert int(error.response.headers["retry-after"]) >= 1
        assert float(error.response.headers["retry-after-ms"]) > 0

    def test_a_limit_enforced_over_a_shorter_window_lets_through_that_much_at_once(
        self, simulator: SimulatorProcess, client: openai.OpenAI
    ) -> None:
        # 6 a minute enforced as 50 seconds' worth: 5 at once, not 6, then one every 10 s
        # (slow enough that no request is refilled while the five go, however loaded the
        # machine: at 60 a minute over 5 s, a second's delay let a sixth through).
        simulator.configure(rpm=6, limit_window_seconds=50, latency_ms=1)
        for i in range(5):
            raw = client.responses.with_raw_response.create(**SUMMARISE.request(f"doc {i}"))
        assert raw.headers["x-ratelimit-limit-requests"] == "6"  # still the minute's limit
        assert int(raw.headers["x-ratelimit-remaining-requests"]) == 0
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(**SUMMARISE.request("one too many"))
        assert info.value.code == "rate_limit_exceeded"
        assert 0 < float(info.value.response.headers["retry-after-ms"]) <= 10_000

    def test_quota_exhausted_has_no_retry_after(self, simulator: SimulatorProcess,
                                                client: openai.OpenAI) -> None:
        simulator.configure(quota_exhausted=True)
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(**SUMMARISE.request("a"))
        assert info.value.code == "insufficient_quota"
        assert "retry-after" not in info.value.response.headers

    def test_response_format_is_not_a_responses_parameter(self, client: openai.OpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as info:
            client.post("/responses", cast_to=object, body={
                "model": "gpt-4.1-mini", "input": "x", "response_format": {"type": "json_object"}})
        assert info.value.code == "unsupported_parameter"
        assert "moved to 'text.format'" in info.value.message

    def test_a_non_strict_schema_is_rejected_like_the_api_does(self, client: openai.OpenAI
                                                               ) -> None:
        body = SUMMARISE.request("x")
        body["text"]["format"]["schema"] = {"type": "object", "properties": {
            "a": {"type": "string"}}, "required": ["a"]}
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(**body)
        assert info.value.code == "invalid_json_schema"
        assert info.value.param == "text.format.schema"
        # The API's words (shared/reference/responses_api.md).
        assert info.value.body["message"] == (  # type: ignore[index]
            f"Invalid schema for response_format '{SUMMARISE.schema_name}': In context=(), "
            "'additionalProperties' is required to be supplied and to be false.")

    def test_unknown_model_and_bad_key(self, simulator: SimulatorProcess) -> None:
        client = openai.OpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=0)
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(**{**SUMMARISE.request("x"), "model": "nope-model"})
        assert info.value.code == "model_not_found"
        # Names are not matched by prefix; snapshots and fine-tuned names are models.
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(**{**SUMMARISE.request("x"), "model": "gpt-doesnotexist"})
        assert info.value.code == "model_not_found"
        for name in ("chatgpt-4o-latest", "gpt-4.1-mini-2025-04-14", "ft:gpt-4.1-mini:acme::x"):
            assert client.responses.create(**{**SUMMARISE.request("x"), "model": name}
                                           ).status == "completed"
        simulator.configure(api_key="sk-right")
        with pytest.raises(openai.AuthenticationError):
            client.responses.create(**SUMMARISE.request("x"))

    def test_refusal_and_truncation(self, simulator: SimulatorProcess, client: openai.OpenAI
                                    ) -> None:
        simulator.configure(refusal_rate=1.0)
        refused = client.responses.create(**SUMMARISE.request(INVOICE))
        assert refused.output_text == ""
        assert refused.output[0].content[0].type == "refusal"  # type: ignore[union-attr]
        simulator.configure(refusal_rate=0.0, truncate_rate=1.0)
        cut = client.responses.create(**SUMMARISE.request(INVOICE))
        assert cut.status == "incomplete"
        assert cut.incomplete_details is not None
        assert cut.incomplete_details.reason == "max_output_tokens"
        with pytest.raises(json.JSONDecodeError):
            json.loads(cut.output_text)

    def test_stats_count_calls_per_document(self, simulator: SimulatorProcess,
                                            client: openai.OpenAI) -> None:
        body = SUMMARISE.request("count me")
        client.responses.create(**body)
        client.responses.create(**body)
        assert simulator.stats()["calls_by_input"][input_key(body)] == 2


@pytest.fixture(scope="class")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    """One simulator for the whole corpus: nothing a schema does changes its state."""
    sim = SimulatorProcess(port=free_port(),
                           log_path=tmp_path_factory.mktemp("sim") / "simulator.log")
    sim.start()
    yield openai.OpenAI(api_key="sk-test", base_url=sim.base_url, max_retries=0)
    sim.stop()


class TestStrictSchemas:
    """The simulator's own validator over HTTP: the corpus's verdicts, as the API answers."""

    @pytest.mark.parametrize(("schema", "accepted"), [(s, ok) for _, s, ok in CORPUS],
                             ids=[name for name, _, _ in CORPUS])
    def test_the_corpus(self, shared_client: openai.OpenAI, schema: dict[str, Any],
                        accepted: bool) -> None:
        client = shared_client
        body = SUMMARISE.request(INVOICE)
        body["text"]["format"]["schema"] = schema
        if accepted:
            response = client.responses.create(**body)
            if response.status == "incomplete":  # thousands of properties: cut off, as real
                assert response.incomplete_details is not None
                assert response.incomplete_details.reason == "max_output_tokens"
                assert len(schema["properties"]) >= 4000
                return
            Draft202012Validator(schema).validate(json.loads(response.output_text))
            return
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(**body)
        assert (info.value.code, info.value.param) == ("invalid_json_schema",
                                                       "text.format.schema")
        assert info.value.body["message"].startswith(  # type: ignore[index]
            f"Invalid schema for response_format '{SUMMARISE.schema_name}': In context=(")
        assert info.value.request_id and info.value.request_id.startswith("req_")

    def test_a_recursive_schema_gets_a_finite_tree(self, client: openai.OpenAI) -> None:
        body = SUMMARISE.request(INVOICE)
        body["text"]["format"]["schema"] = TREE
        tree = json.loads(client.responses.create(**body).output_text)
        depth = 0
        while tree.get("root", tree)["children"]:
            tree, depth = tree.get("root", tree)["children"][0], depth + 1
        assert 0 < depth < 10

    def test_every_answer_has_a_request_id_and_an_unknown_route_a_json_404(
            self, simulator: SimulatorProcess, client: openai.OpenAI) -> None:
        counted = client.responses.input_tokens.with_raw_response.count(
            model="gpt-4.1-mini", input="hello")
        assert counted.headers["x-request-id"].startswith("req_")
        with pytest.raises(openai.NotFoundError) as info:
            client.post("/nowhere", cast_to=object, body={})
        assert info.value.body == {"message": "Invalid URL (POST /v1/nowhere)",
                                   "type": "invalid_request_error", "param": None, "code": None}
        assert info.value.request_id and info.value.request_id.startswith("req_")


class TestParameters:
    """Parameters a model does not take, values out of range, fields the API does not know:
    the request corpus's verdicts over HTTP, sent by the SDK."""

    @pytest.mark.parametrize(("changes", "verdict"), [(c.changes, c.verdict) for c in CASES],
                             ids=[c.name for c in CASES])
    def test_the_corpus(self, shared_client: openai.OpenAI, changes: dict[str, Any],
                        verdict: Verdict | None) -> None:
        body = changed(SUMMARISE.request(INVOICE), changes)
        if verdict is None:
            response = shared_client.post("/responses", body=body, cast_to=Response)
            assert response.status == "completed" and response.model == body["model"]
            return
        with pytest.raises(openai.APIStatusError) as info:
            shared_client.post("/responses", body=body, cast_to=Response)
        error = info.value
        assert Verdict(error.status_code, str(error.code), error.param) == verdict
        assert error.type == "invalid_request_error" and error.message
        assert error.request_id and error.request_id.startswith("req_")


class TestMedia:
    """Images and PDFs: taken, counted by their pixels, or refused like the API refuses them."""

    def test_an_image_is_answered_and_counted_by_its_tiles(self, client: openai.OpenAI) -> None:
        from pipelines.media import Attachment, image_tokens, prepare_image
        from tests.support.files import make_image

        image: Attachment = prepare_image("photo.png", make_image(4000, 3000), "image/png")
        with_image = client.responses.create(**EXTRACT.request("", attachments=(image,)))
        without = client.responses.create(**EXTRACT.request(""))
        assert with_image.usage is not None and without.usage is not None
        assert with_image.usage.input_tokens - without.usage.input_tokens == \
            pytest.approx(image_tokens(image.width, image.height), abs=10)
        EXTRACT.validate_output(with_image.output_text)

    def test_a_scanned_pdf_is_answered_and_counted_per_page(self, client: openai.OpenAI
                                                            ) -> None:
        from pipelines.documents import SourceDocument, read_bytes
        from pipelines.media import attachment_tokens
        from tests.support.files import make_scanned_pdf

        [doc] = list(read_bytes("scan.pdf", make_scanned_pdf(3), "application/pdf"))
        assert isinstance(doc, SourceDocument)
        response = client.responses.create(**SUMMARISE.request("", attachments=doc.attachments))
        baseline = client.responses.create(**SUMMARISE.request(""))
        assert response.usage is not None and baseline.usage is not None
        assert response.usage.input_tokens - baseline.usage.input_tokens == \
            pytest.approx(attachment_tokens(doc.attachments[0]), abs=10)

    @pytest.mark.parametrize(("part", "code"), [
        ({"type": "input_image", "image_url": "data:image/png;base64,aGVsbG8="},
         "invalid_image_format"),
        ({"type": "input_image", "image_url": "data:image/tiff;base64,aGVsbG8="},
         "invalid_image_format"),
        ({"type": "input_image", "image_url": "not a url"}, "invalid_image_url"),
        ({"type": "input_file", "filename": "a.pdf", "file_data":
          "data:application/pdf;base64,aGVsbG8="}, "invalid_file"),
        ({"type": "input_file", "file_data": "data:application/pdf;base64,aGVsbG8="},
         "missing_required_parameter"),
    ])
    def test_bad_media_is_refused_with_400(self, client: openai.OpenAI, part: dict[str, str],
                                           code: str) -> None:
        body = SUMMARISE.request("x")
        body["input"][0]["content"].append(part)
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(**body)
        assert caught.value.code == code
