"""What a user reads when a service docpipe needs fails: one line, made in one place.

:func:`explain` turns what the database driver, the broker's client or the OpenAI SDK raised
into a :class:`ServiceFailure`: the service, its URL with the password hidden, the cause
(refused, unknown host, authentication failed, no such database, unsupported scheme,
timeout) and what to check or type. The command line prints it for every command; the
worker prints it at start. Nothing here imports a driver: errors are recognised by the
package that raised them and their message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from workers.errors import brief
from workers.settings import DEFAULT_DATABASE_URL, Settings, redacted

#: Exit code of a command whose database, broker or model API failed it.
EXIT_SERVICE = 4

_DATABASE_SETTING = "DOCPIPE_DATABASE_URL"
_BROKER_SETTING = "DOCPIPE_BROKER_URL"


@dataclass(frozen=True)
class ServiceFailure:
    """One failure of a service, as one line."""

    #: ``the database``, ``the broker`` or ``the model API``.
    service: str
    #: Its URL, password hidden.
    url: str
    #: What went wrong, to follow "the database at URL".
    cause: str
    #: What to check or type.
    hint: str

    def line(self) -> str:
        return f"{self.service} at {self.url} {self.cause}: {self.hint}"


def explain(error: BaseException, settings: Settings) -> ServiceFailure | None:
    """The service failure behind ``error`` (or an error it was raised from), or None when
    no service of docpipe's failed."""
    for cause in _chain(error):
        package = type(cause).__module__.partition(".")[0]
        if package in ("sqlalchemy", "psycopg", "psycopg2", "sqlite3", "alembic"):
            if (found := _database(cause, settings.database_url)) is not None:
                return found
        elif package in ("kombu", "redis", "amqp", "celery"):
            if (found := _broker(cause, settings.effective_broker_url)) is not None:
                return found
        elif package == "openai" and type(cause).__name__ in ("APIConnectionError",
                                                               "APITimeoutError"):
            url = settings.openai_base_url or "https://api.openai.com/v1"
            timeout = type(cause).__name__ == "APITimeoutError"
            return ServiceFailure("the model API", redacted(url),
                                  "did not answer in time" if timeout else "could not be reached",
                                  "check OPENAI_BASE_URL and this machine's network")
    return None


def scrubbed(message: str, settings: Settings) -> str:
    """``message`` with every password of docpipe's service URLs replaced by ``***``: a
    driver's message may quote a URL whole."""
    for url in (settings.database_url, settings.broker_url or ""):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            message = message.replace(password, "***")
    return message


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


#: The message's words for each cause, first match wins; shared by both services.
_CAUSES = (
    ("refused", ("connection refused", "error 111 ", "error 61 ")),
    ("unknown host", ("could not translate host name", "name or service not known",
                      "nodename nor servname", "temporary failure in name resolution",
                      "no address associated", "error -2 ", "error -3 ", "error -5 ")),
    ("authentication", ("password authentication failed", "authentication failed",
                        "no password supplied", "invalid password", "wrongpass", "noauth",
                        "invalid username-password", "authentication required",
                        "called without any password configured")),
    ("no database", ("does not exist",)),
    ("timeout", ("timeout expired", "timed out", "timeout connecting", "timeout reading")),
    ("cannot open", ("unable to open database file",)),
)


def _cause(error: BaseException) -> str | None:
    message = f"{str(error).lower()} "
    for cause, words in _CAUSES:
        if any(word in message for word in words):
            return cause
    return None


def _database(error: BaseException, url: str) -> ServiceFailure | None:
    shown = redacted(url)
    name = type(error).__name__
    scheme = url.partition("://")[0] if "://" in url else ""
    if name == "NoSuchModuleError" or (name == "ArgumentError" and "could not parse" in str(
            error).lower()):
        what = f"uses the scheme {scheme}://, which docpipe cannot use" if scheme else \
            "is not a database URL"
        return ServiceFailure("the database", shown if scheme else repr(shown), what,
                              f"set {_DATABASE_SETTING} to postgresql+psycopg://USER:PASSWORD@"
                              "HOST:5432/NAME, or sqlite:///PATH")
    cause = _cause(error)
    if cause is None:
        if name in ("OperationalError", "InterfaceError"):
            return ServiceFailure("the database", shown, f"failed ({brief(error)})",
                                  f"check that it is running and {_DATABASE_SETTING}")
        return None
    database = urlsplit(url).path.lstrip("/")
    default = " (unset, docpipe keeps a SQLite database under ./.docpipe/)" \
        if url != DEFAULT_DATABASE_URL else ""
    lines = {
        "refused": ("refused the connection",
                    f"is PostgreSQL running there? Check the host and port in "
                    f"{_DATABASE_SETTING}{default}"),
        "unknown host": ("names a host that does not resolve",
                         f"check the host name in {_DATABASE_SETTING}"),
        "authentication": ("refused the user name or password",
                           f"check the user and password in {_DATABASE_SETTING}"),
        "no database": (f"has no database {_database_name(error, database)!r}",
                        f"create it (createdb {_database_name(error, database)}) or fix the "
                        f"name in {_DATABASE_SETTING}"),
        "timeout": ("did not answer in time",
                    f"check the host and port in {_DATABASE_SETTING}, and that no firewall "
                    "drops the connection"),
        "cannot open": ("cannot be opened",
                        f"check that its folder exists and is writable, or set "
                        f"{_DATABASE_SETTING}"),
    }
    what, hint = lines[cause]
    return ServiceFailure("the database", shown, what, hint)


def _database_name(error: BaseException, fallback: str) -> str:
    found = re.search(r'database "([^"]+)" does not exist', str(error))
    return found.group(1) if found else fallback


def _broker(error: BaseException, url: str) -> ServiceFailure | None:
    shown = redacted(url)  # (its scheme is checked with the settings)
    cause = _cause(error)
    if cause is None:
        if type(error).__name__ in ("OperationalError", "ConnectionError"):
            return ServiceFailure("the broker", shown, f"failed ({brief(error)})",
                                  f"check that Redis is running and {_BROKER_SETTING}")
        return None
    lines = {
        "refused": ("refused the connection",
                    f"is Redis running there? Check {_BROKER_SETTING} (`docpipe run` starts "
                    "its own Redis when it is unset)"),
        "unknown host": ("names a host that does not resolve",
                         f"check the host name in {_BROKER_SETTING}"),
        "authentication": ("refused the password",
                           f"check the password in {_BROKER_SETTING}"),
        "timeout": ("did not answer in time",
                    f"check the host and port in {_BROKER_SETTING}"),
    }
    what, hint = lines.get(cause, ("failed", f"check {_BROKER_SETTING}"))
    return ServiceFailure("the broker", shown, what, hint)
