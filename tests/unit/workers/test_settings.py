from __future__ import annotations

import pytest
from pydantic import ValidationError

from workers.settings import DEFAULT_DATABASE_URL, Settings


def test_defaults_are_the_embedded_ones() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == DEFAULT_DATABASE_URL and settings.uses_default_database
    assert settings.broker_url is None
    assert settings.effective_broker_url.startswith("redis://")


def test_reads_openai_variables_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-1234567890")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DOCPIPE_MODEL_LIMITS", '{"gpt-4.1-mini": {"rpm": 500, "tpm": 200000}}')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-test-1234567890"
    assert settings.openai_base_url == "http://127.0.0.1:9/v1"
    assert settings.model_limits["gpt-4.1-mini"].tpm == 200000


def test_the_key_never_shows_in_a_repr_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "sk-very-secret-value" not in repr(settings)
    assert "sk-very-secret-value" not in settings.model_dump_json()


@pytest.mark.parametrize(("field", "value"), [
    ("task_time_limit_seconds", 4000),
    ("retry_max_seconds", 3600),
    ("lease_seconds", 7200),
])
def test_refuses_timings_that_reach_the_visibility_timeout(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match="visibility_timeout_seconds"):
        Settings(_env_file=None, **{field: value})  # type: ignore[arg-type]


def test_refuses_a_soft_limit_above_the_hard_limit() -> None:
    with pytest.raises(ValidationError, match="soft"):
        Settings(_env_file=None, task_soft_time_limit_seconds=400,  # type: ignore[call-arg]
                 task_time_limit_seconds=300)


def test_a_stopped_holders_locks_go_before_it_is_found_dead() -> None:
    with pytest.raises(ValidationError, match="below holder_timeout_seconds"):
        Settings(holder_timeout_seconds=30, db_idle_transaction_seconds=30)
    with pytest.raises(ValidationError, match="three heartbeat_seconds"):
        Settings(holder_timeout_seconds=12, heartbeat_seconds=5, db_idle_transaction_seconds=5)


def test_a_lease_outlasts_two_heartbeats() -> None:
    with pytest.raises(ValidationError, match="twice heartbeat_seconds"):
        Settings(lease_seconds=8, heartbeat_seconds=5)
    assert Settings(lease_seconds=10, heartbeat_seconds=5).lease_seconds == 10


def test_a_memory_limit_needs_the_prefork_pool() -> None:
    with pytest.raises(ValidationError, match="needs worker_pool=prefork"):
        Settings(_env_file=None, worker_max_memory_mb=512)  # type: ignore[call-arg]
    limited = Settings(_env_file=None, worker_max_memory_mb=512,  # type: ignore[call-arg]
                       worker_pool="prefork")
    assert limited.worker_max_memory_mb == 512


def test_passwords_in_service_urls_stay_out_of_a_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCPIPE_DATABASE_URL", "postgresql+psycopg://app:db-pass-123@db/app")
    monkeypatch.setenv("DOCPIPE_BROKER_URL", "redis://:redis-pass-456@redis:6379/0")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "db-pass-123" not in repr(settings) and "redis-pass-456" not in repr(settings)
    assert settings.effective_broker_url == "redis://:redis-pass-456@redis:6379/0"


def test_prompt_cache_lanes_follow_the_configured_request_rate() -> None:
    limited = Settings(_env_file=None,  # type: ignore[call-arg]
                       model_limits={"gpt-4.1-mini": {"rpm": 500, "tpm": 200_000}})
    assert limited.cache_shards("gpt-4.1-mini") == 34  # 500 / 15, rounded up
    assert limited.cache_shards("gpt-5-mini") == 1  # no rate known: one key
    fixed = Settings(_env_file=None, prompt_cache_shards=3)  # type: ignore[call-arg]
    assert fixed.cache_shards("gpt-4.1-mini") == 3


def test_pipeline_paths_split_on_commas_and_the_path_separator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCPIPE_PIPELINES", "/etc/docpipe/a.toml, /srv/pipelines:/opt/b.py")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [str(p) for p in settings.pipelines] == [
        "/etc/docpipe/a.toml", "/srv/pipelines", "/opt/b.py"]


def test_schedules_become_beat_entries_on_the_control_queue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.schedules import crontab

    from workers.runtime.celery_app import Queue, TaskName, create_celery

    monkeypatch.setenv("DOCPIPE_SCHEDULES", '{"nightly": {"pipeline": "invoices", '
                       '"cron": "30 1 * * 1-5", "only": ["outdated"]}}')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.schedules["nightly"].queue == Queue.NIGHTLY
    conf = create_celery(settings).conf
    entry = conf.beat_schedule["schedule:nightly"]
    assert entry["task"] == TaskName.START_SCHEDULED and entry["args"] == ("nightly",)
    assert entry["schedule"] == crontab(minute="30", hour="1", day_of_week="1-5")
    assert conf.task_routes[TaskName.START_SCHEDULED]["queue"] == Queue.CONTROL
    assert conf.beat_schedule_filename == str(settings.beat_schedule_file)


def test_a_schedule_needs_five_cron_fields() -> None:
    with pytest.raises(ValidationError, match="five fields"):
        Settings(_env_file=None,  # type: ignore[call-arg]
                 schedules={"n": {"pipeline": "p", "cron": "0 2 * *"}})
