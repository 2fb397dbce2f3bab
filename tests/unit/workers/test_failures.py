"""One line for a service's failure: the service, its URL without the password, the cause,
and what to do; recognised through whatever wrapped the driver's error."""

from __future__ import annotations

import psycopg
import pytest
import redis
import sqlalchemy.exc
from kombu.exceptions import OperationalError as KombuOperationalError

from workers.runtime.failures import explain, scrubbed
from workers.settings import Settings

DATABASE = "postgresql+psycopg://app:s3cr3t-pw@db.internal:5432/docs"
BROKER = "redis://:br0ker-pw@queue.internal:6379/0"


def settings() -> Settings:
    return Settings(_env_file=None, database_url=DATABASE,
                    broker_url=BROKER)


def wrapped(message: str) -> sqlalchemy.exc.OperationalError:
    """A driver's error as SQLAlchemy raises it, from a statement's execution."""
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(message))


@pytest.mark.parametrize(("message", "cause", "hint"), [
    ('connection failed: connection to server at "10.0.0.5", port 5432 failed: Connection '
     "refused", "refused the connection", "is PostgreSQL running there?"),
    ('failed to resolve host "db.internal": [Errno -2] Name or service not known',
     "names a host that does not resolve", "check the host name"),
    ('connection failed: FATAL:  password authentication failed for user "app"',
     "refused the user name or password", "check the user and password"),
    ('connection failed: FATAL:  database "docs" does not exist',
     "has no database 'docs'", "createdb docs"),
    ("connection timeout expired", "did not answer in time", "firewall"),
])
def test_each_cause_of_a_database_failure(message: str, cause: str, hint: str) -> None:
    failure = explain(wrapped(message), settings())
    assert failure is not None
    line = failure.line()
    assert line.startswith("the database at postgresql+psycopg://app:***@db.internal:5432/docs")
    assert cause in line and hint in line and "DOCPIPE_DATABASE_URL" in line
    assert "s3cr3t-pw" not in line


def test_a_failure_is_found_under_whatever_raised_it() -> None:
    try:
        try:
            raise wrapped("Connection refused")
        except sqlalchemy.exc.OperationalError as exc:
            raise RuntimeError("while checking the schema") from exc
    except RuntimeError as outer:
        failure = explain(outer, settings())
    assert failure is not None and "refused the connection" in failure.line()


def test_a_sqlite_file_that_cannot_be_opened() -> None:
    current = Settings(_env_file=None,
                       database_url="sqlite:////no/such/folder/d.db")
    error = sqlalchemy.exc.OperationalError("x", {}, Exception("unable to open database file"))
    failure = explain(error, current)
    assert failure is not None
    assert "cannot be opened" in failure.line() and "folder exists" in failure.line()


@pytest.mark.parametrize(("error", "cause"), [
    (KombuOperationalError("Error 111 connecting to queue.internal:6379. Connection refused."),
     "refused the connection"),
    (redis.exceptions.ConnectionError("Error -3 connecting to queue.internal:6379. "
                                      "Temporary failure in name resolution."),
     "names a host that does not resolve"),
    (redis.exceptions.AuthenticationError("invalid username-password pair or user is "
                                          "disabled."), "refused the password"),
    (redis.exceptions.TimeoutError("Timeout connecting to server"), "did not answer in time"),
])
def test_each_cause_of_a_broker_failure(error: Exception, cause: str) -> None:
    failure = explain(error, settings())
    assert failure is not None
    assert failure.line().startswith("the broker at redis://:***@queue.internal:6379/0 ")
    assert cause in failure.line() and "br0ker-pw" not in failure.line()


def test_the_model_api_unreachable() -> None:
    import httpx2
    import openai

    error = openai.APIConnectionError(request=httpx2.Request("POST", "https://api.example/v1"))
    current = Settings(_env_file=None,
                       openai_base_url="https://api.example/v1")
    failure = explain(error, current)
    assert failure is not None
    assert failure.line() == ("the model API at https://api.example/v1 could not be reached: "
                              "check OPENAI_BASE_URL and this machine's network")


def test_an_error_of_docpipes_own_is_not_a_service_failure() -> None:
    assert explain(ValueError("bad"), settings()) is None


def test_a_password_quoted_in_a_message_is_scrubbed() -> None:
    message = f"Could not parse SQLAlchemy URL from string '{DATABASE}' or {BROKER}"
    cleaned = scrubbed(message, settings())
    assert "s3cr3t-pw" not in cleaned and "br0ker-pw" not in cleaned and "***" in cleaned
