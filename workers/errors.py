"""docpipe's runtime error tree, split by what the worker must do.

- :class:`RetryableError`: call again after a backoff (transient) or a wait (rate limited).
- :class:`PauseRunError`: every item of the run would fail the same way (quota, bad key,
  unknown model, a request the pipeline builds wrong, a pipeline the workers do not know);
  pause the run until someone fixes it, never retry in a loop.
- :class:`ItemFailedError`: this item cannot succeed (bad request, bad output, unreadable
  document); fail it with its code and go on.

Every error carries the item id, the API request id and the usage the failed call spent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Token usage of one call, as the API reports it."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


def brief(error: BaseException) -> str:
    """An error in one line for the log: its class and the first line of its message."""
    text = str(error).strip()
    first = text.splitlines()[0].strip().rstrip(".")[:200] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class DocpipeError(Exception):
    """Base of every docpipe runtime error."""


class ConfigurationError(DocpipeError):
    """Settings or environment that docpipe cannot run with."""


class DatabaseNotMigrated(ConfigurationError):
    """The database schema is missing or older than this version of docpipe."""


class RunNotFound(DocpipeError, LookupError):
    """A run id that names no run: every command says so in the same words (exit 1)."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"no run {run_id}; `docpipe status` lists the runs")
        self.run_id = run_id


class NoSuchInput(ConfigurationError):
    """Paths that match no file: refused before a run is created."""

    def __init__(self, paths: list[str]) -> None:
        named = ", ".join(paths)
        noun = "matches" if len(paths) == 1 else "match"
        super().__init__(f"{named} {noun} no file: check the path (nothing was created)")
        self.paths = list(paths)


class IngestCutOff(DocpipeError):
    """An ingest stopped before it read every source (a service failed, Ctrl-C). Its run is
    kept, with what was written; ``docpipe resume`` reads the rest."""

    def __init__(self, run_id: int, *, interrupted: bool) -> None:
        super().__init__(f"run {run_id}'s ingest was cut off")
        self.run_id = run_id
        self.interrupted = interrupted

    @property
    def hint(self) -> str:
        return f"run {self.run_id} is kept: `docpipe resume {self.run_id}` reads the rest"


class RunInterrupted(DocpipeError):
    """Ctrl-C stopped a run that ``docpipe run`` ran here; it is paused, and the message
    says how to go on."""

    def __init__(self, run_id: int, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class ScheduleBusy(DocpipeError):
    """The schedule's previous run has not finished, so a new one may not start (beat
    skips this night's run; nothing to retry)."""


class ItemsFailed(DocpipeError):
    """A task's items ended failed: raised so that Celery, and Flower, count the task failed.

    The items are already failed in the database, with their codes; nothing retries the task.
    ``docpipe replay`` brings the items back.
    """

    def __init__(self, failed: dict[int, str]) -> None:
        self.failed = dict(failed)
        listed = ", ".join(f"{item_id} ({code})" for item_id, code in sorted(failed.items()))
        noun = "item" if len(failed) == 1 else "items"
        super().__init__(f"{noun} failed: {listed}")

    def __reduce__(self) -> tuple[type[ItemsFailed], tuple[dict[int, str]]]:
        return ItemsFailed, (self.failed,)


class ItemError(DocpipeError):
    """A failure while processing one item.

    Attributes:
        error_class: What kind of failure (``transient``, ``rate_limited``, ``quota``, ...).
        code: The API's error code or docpipe's own, e.g. ``rate_limit_exceeded``.
        http_status: The HTTP status, when there was a response.
        request_id: The API's ``x-request-id``, when there was a response.
        usage: Tokens the failed call still spent (truncated output bills in full).
    """

    error_class = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        response_id: str | None = None,
        usage: Usage | None = None,
        item_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.error_class
        self.http_status = http_status
        self.request_id = request_id
        self.response_id = response_id
        self.usage = usage or Usage()
        self.item_id = item_id


class RetryableError(ItemError):
    """Call again later; the item keeps its place."""

    error_class = "retryable"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(
            message, code=code, http_status=http_status, request_id=request_id, usage=usage
        )
        #: Seconds the server asked us to wait, if it said.
        self.retry_after = retry_after


class TransientError(RetryableError):
    """408, 409, 5xx, timeouts and connection errors: back off with full jitter."""

    error_class = "transient"


class InfrastructureError(RetryableError):
    """docpipe's own services (Redis, the database) failed while the item was being processed.

    Not the item's fault and not the API's: the item is released to be retried later, so an
    outage never counts as a lost worker (which would push innocent items to quarantine).
    """

    error_class = "infrastructure"


class RateLimitedError(RetryableError):
    """429 ``rate_limit_exceeded``: wait as long as the API says."""

    error_class = "rate_limited"


class CapacityUnavailableError(RetryableError):
    """429 "Resource Unavailable" for a flex request: no capacity now, nothing charged.

    Not a rate limit (the fleet does not cool down, live calls are not held back) and not
    the item's fault: it costs no attempt, up to ``max_rate_limited_attempts``.
    """

    error_class = "capacity"


class PauseRunError(ItemError):
    """Every item would fail the same way: pause the run with a message that says what to fix."""

    error_class = "pause"
    #: What the user should do; ``{run}`` becomes the run id, ``{pipeline}`` its pipeline.
    hint = ""


class PipelineBrokenError(PauseRunError):
    """The run's pipeline file no longer loads: every item would fail the same way."""

    error_class = "pipeline"
    hint = "fix the pipeline file, then `docpipe resume {run}`"


class PipelineUnknownError(PauseRunError):
    """The workers know no pipeline of the run's name: their ``DOCPIPE_PIPELINES`` is not
    the one the run was started with."""

    error_class = "pipeline"
    hint = ("start the workers with DOCPIPE_PIPELINES naming the file or folder that "
            "defines the pipeline, as the CLI's did, then `docpipe resume {run}`")


class RequestRefusedError(PauseRunError):
    """A 400 for a field of the pipeline's own request (its schema, a parameter its model
    does not take, an unknown field): every item of the run would get the same answer."""

    error_class = "request_refused"

    def __init__(self, message: str, *, param: str | None, code: str | None = None,
                 http_status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(message, code=code, http_status=http_status, request_id=request_id)
        #: The request field the API named, e.g. ``reasoning.effort``.
        self.param = param
        field = f"{param} in" if param else "the request of"
        self.hint = (f"fix {field} pipeline {{pipeline}} (`docpipe pipelines show "
                     "{pipeline}` prints the request it sends), then `docpipe resume {run}`")


class QuotaExhaustedError(PauseRunError):
    """Quota, credit or spend limit exhausted (429/403): never retried in a loop."""

    error_class = "quota"
    hint = "add credit or raise the spend limit, then `docpipe resume {run}`"


class AuthenticationFailedError(PauseRunError):
    """401: the API key is missing, wrong or revoked."""

    error_class = "auth"
    hint = "set a valid OPENAI_API_KEY, then `docpipe resume {run}`"


class ModelNotFoundError(PauseRunError):
    """404: the model does not exist or the key has no access to it."""

    error_class = "model_not_found"
    hint = ("set the model of pipeline {pipeline} to one this key can access, then "
            "`docpipe resume {run}`")


class BudgetExhaustedError(PauseRunError):
    """The run's spend plus its calls in flight would pass its budget."""

    error_class = "budget"
    hint = "`docpipe resume {run} --budget-usd AMOUNT` with a larger budget"


class ItemFailedError(ItemError):
    """This item cannot succeed; fail it with its code."""

    error_class = "failed"


class PermanentAPIError(ItemFailedError):
    """400, 403, 422 and other 4xx: the request itself is wrong."""

    error_class = "permanent"


class BadOutputError(ItemFailedError):
    """The model answered with a refusal, truncated output or JSON off the schema."""

    error_class = "bad_output"


class QuarantinedError(ItemFailedError):
    """Workers were lost again and again while holding the item: a poison document."""

    error_class = "dead"


class DocumentUnreadableError(ItemFailedError):
    """The source could not be turned into text."""

    error_class = "document"


#: Pauses caused by the pipeline's own definition (its request, its model, its file, the
#: workers' list of pipelines): the fix may change the pipeline, and so its version.
PIPELINE_PAUSES = frozenset({RequestRefusedError.error_class, ModelNotFoundError.error_class,
                             PipelineBrokenError.error_class})
