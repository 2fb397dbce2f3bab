"""Errors raised by the domain: documents that cannot be read, model output that cannot be used.

Each error carries a stable, machine-readable ``code`` (stored on the item and shown by
``docpipe status``) and a human message that names the problem.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for every error raised by :mod:`pipelines`."""

    code: str = "pipeline_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class DocumentError(PipelineError):
    """A source could not be turned into document text; the item fails, the run goes on.

    Codes: ``empty_file``, ``unsupported_type``, ``binary_content``, ``encrypted_pdf``,
    ``encrypted_docx``, ``no_text_layer``, ``corrupt_file``, ``too_large``, ``unreadable``,
    ``no_text``, ``bad_record``.
    """

    code = "unreadable"

    def __init__(self, source: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{source}: {message}", code=code)
        self.source = source
        self.reason = message


class OutputError(PipelineError):
    """The model answered, but its output cannot be used as a result.

    Codes: ``refusal``, ``truncated``, ``content_filter``, ``schema_violation``, ``empty_output``.
    """

    code = "bad_output"


class PipelineNotFound(PipelineError):
    """No pipeline is registered under the requested name."""

    code = "pipeline_not_found"
