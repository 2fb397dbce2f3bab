"""JSON log lines carry the item's context, bound once, on every record."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest
from typer.testing import CliRunner

from workers.cli import app
from workers.ops import logs
from workers.settings import get_settings


def _logger(log_format: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logs.use_format([handler], log_format)
    logger = logging.getLogger(f"docpipe.test.{log_format}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_the_bound_context() -> None:
    logger, stream = _logger("json")
    with logs.bind(run_id=7, item_id=42, attempt=2):
        logger.info("calling")
        logs.update(request_id="req_abc")
        logger.warning("item call failed: %s", "server_error", extra={"http_status": 500})
    logger.info("outside")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "calling" and first["level"] == "INFO"
    assert (first["run_id"], first["item_id"], first["attempt"]) == (7, 42, 2)
    assert "request_id" not in first
    assert second["request_id"] == "req_abc" and second["http_status"] == 500
    assert second["message"] == "item call failed: server_error"
    assert second["logger"] == "docpipe.test.json" and "time" in second
    assert "item_id" not in third


def test_extra_wins_over_the_bound_context() -> None:
    logger, stream = _logger("json")
    with logs.bind(item_id=1):
        logger.info("parent", extra={"item_id": 2})
    assert json.loads(stream.getvalue())["item_id"] == 2


def test_text_format_is_left_alone() -> None:
    logger, stream = _logger("text")
    with logs.bind(item_id=1):
        logger.info("plain")
    assert stream.getvalue() == "plain\n"



def test_cli_log_format_reaches_the_processes_it_starts(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    seen: list[str] = []
    # The CLI's own logging set-up would restyle this test process's handlers: record it.
    monkeypatch.setattr(logs, "configure", lambda log_format, level=0: seen.append(log_format))
    monkeypatch.delenv("DOCPIPE_LOG_FORMAT", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["--log-format", "json", "pipelines", "--json"])
    try:
        assert result.exit_code == 0, result.output
        # Set in the environment, which worker, beat and Flower children inherit.
        assert os.environ["DOCPIPE_LOG_FORMAT"] == "json"
        assert get_settings().log_format == "json" and seen == ["json"]
    finally:
        os.environ.pop("DOCPIPE_LOG_FORMAT", None)
        get_settings.cache_clear()
    refused = runner.invoke(app, ["--log-format", "xml", "pipelines"])
    assert refused.exit_code == 2
