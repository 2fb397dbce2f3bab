"""docpipe's domain: documents, strict schemas and pipeline definitions.

Nothing here imports Celery, SQLAlchemy, Redis or OpenAI; ``workers`` runs what is
defined here.
"""

from pipelines.builtin import BUILTIN_PIPELINES, EXTRACT, SUMMARISE
from pipelines.definitions import Pipeline
from pipelines.errors import DocumentError, OutputError, PipelineError, PipelineNotFound


def get_pipeline(name: str) -> Pipeline:
    """Return the pipeline called ``name``.

    Raises:
        PipelineNotFound: no such pipeline; the message lists the known ones.
    """
    try:
        return BUILTIN_PIPELINES[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_PIPELINES))
        raise PipelineNotFound(f"no pipeline named {name!r} (known: {known})") from None


def list_pipelines() -> list[Pipeline]:
    """Every known pipeline, by name."""
    return [BUILTIN_PIPELINES[name] for name in sorted(BUILTIN_PIPELINES)]


__all__ = [
    "EXTRACT",
    "SUMMARISE",
    "DocumentError",
    "OutputError",
    "Pipeline",
    "PipelineError",
    "PipelineNotFound",
    "get_pipeline",
    "list_pipelines",
]
