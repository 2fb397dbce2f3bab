"""docpipe's domain: documents, strict schemas and pipeline definitions.

Nothing here imports Celery, SQLAlchemy, Redis or OpenAI; ``workers`` runs what is
defined here.
"""

from collections.abc import Sequence
from pathlib import Path

from pipelines.builtin import BUILTIN_PIPELINES, EXTRACT, SUMMARISE
from pipelines.definitions import Pipeline
from pipelines.errors import DocumentError, OutputError, PipelineError, PipelineNotFound
from pipelines.loader import PipelineDefinitionError, registry


def get_pipeline(name: str, paths: Sequence[Path | str] = ()) -> Pipeline:
    """Return the pipeline called ``name``: built in, or defined in a file under ``paths``.

    Raises:
        PipelineNotFound: no such pipeline; the message lists the known ones.
        PipelineDefinitionError: a pipeline file under ``paths`` is invalid.
    """
    return registry(paths).get(name)


def list_pipelines(paths: Sequence[Path | str] = ()) -> list[Pipeline]:
    """Every known pipeline, by name."""
    known = registry(paths).pipelines()
    return [known[name] for name in sorted(known)]


__all__ = [
    "BUILTIN_PIPELINES",
    "EXTRACT",
    "SUMMARISE",
    "DocumentError",
    "OutputError",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineError",
    "PipelineNotFound",
    "get_pipeline",
    "list_pipelines",
]
