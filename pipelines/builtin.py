"""The pipelines docpipe ships: ``summarise`` and ``extract``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.definitions import Pipeline

DEFAULT_MODEL = "gpt-4.1-mini"


class Summary(BaseModel):
    """Output of ``summarise``."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(description="A faithful summary of the document in 2 to 5 sentences.")
    key_points: list[str] = Field(description="The 3 to 7 most important points, one each.")
    topics: list[str] = Field(description="1 to 5 short topic labels, lower case.")
    language: str = Field(description="ISO 639-1 code of the document's main language.")


class Party(BaseModel):
    """A person or organisation that takes part in what the document records."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: str | None = Field(description="Their role, e.g. buyer, seller, author; null if unknown.")


class Entity(BaseModel):
    """A named thing the document mentions."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: Literal["person", "organization", "location", "product", "other"]


class Amount(BaseModel):
    """A monetary amount stated in the document."""

    model_config = ConfigDict(extra="forbid")

    value: float
    currency: str | None = Field(description="ISO 4217 code, or null if not stated.")
    description: str | None = Field(description="What the amount is for, or null.")


class Extraction(BaseModel):
    """Output of ``extract``."""

    model_config = ConfigDict(extra="forbid")

    document_type: Literal[
        "invoice", "contract", "letter", "report", "article", "email", "form", "other"
    ]
    title: str | None = Field(description="The document's title, or null if it has none.")
    date: str | None = Field(description="The document's date as YYYY-MM-DD, or null.")
    parties: list[Party]
    entities: list[Entity]
    amounts: list[Amount]
    key_facts: list[str] = Field(description="Up to 10 facts stated in the document.")


#: Document tokens per call for the built-in pipelines: long enough for whole contracts and
#: reports, short enough that the answer keeps the details of each part.
LONG_DOCUMENT_CHUNK_TOKENS = 16_000

SUMMARISE = Pipeline(
    name="summarise",
    model=DEFAULT_MODEL,
    instructions=(
        "You summarise documents. Write a faithful summary using only what the document "
        "says, list its key points and topics, and name its main language."
    ),
    output=Summary,
    max_output_tokens=1200,
    max_input_tokens=LONG_DOCUMENT_CHUNK_TOKENS,
    description="Summary, key points, topics and language of each document.",
)

EXTRACT = Pipeline(
    name="extract",
    model=DEFAULT_MODEL,
    instructions=(
        "You extract structured facts from documents. Report only what the document states; "
        "use null or an empty list where a field is absent. Dates are YYYY-MM-DD."
    ),
    output=Extraction,
    max_output_tokens=2000,
    max_input_tokens=LONG_DOCUMENT_CHUNK_TOKENS,
    description="Document type, title, date, parties, entities, amounts and key facts.",
)

BUILTIN_PIPELINES: dict[str, Pipeline] = {p.name: p for p in (SUMMARISE, EXTRACT)}
