"""Output that fits any strict schema, derived from the document text.

Deterministic: the same text and schema always give the same output. Values come from the
text wherever the property name says what is wanted (an extractive summary, names that occur
in the text, amounts and dates found in it), so simulated results are meaningful to read.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
_CAP = r"(?:[A-Z][a-z]+(?:-[A-Z][a-z]+)?|[A-Z]{2,5}\b|[A-Z]\.)"
_NAME = re.compile(rf"\b({_CAP}(?:[ \t]+(?:(?:of|and|&|de|van|von)[ \t]+)?{_CAP})+)")
#: Capitalised words that start sentences or label fields rather than name anything.
_NOT_NAMES = {"The", "This", "That", "These", "Those", "A", "An", "In", "On", "At", "For",
              "Dear", "Contact", "Bill", "Date", "Invoice", "Subject", "From", "To", "Re",
              "Amount", "Total", "Payment", "Please", "Our", "Your", "We", "If", "As", "By"}
_ORG_MARKERS = ("Inc", "Ltd", "LLC", "GmbH", "Corp", "Company", "Corporation", "Bank",
                "University", "Group", "AG", "SA", "plc", "Institute", "Agency", "Foundation",
                "Partners", "Holdings")
_PLACE_WORDS = {"London", "Paris", "Berlin", "New York", "Tokyo", "Madrid", "Rome", "Amsterdam",
                "San Francisco", "Los Angeles", "Chicago", "Boston", "Munich", "Vienna", "Zurich"}
_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"], start=1)}
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DMY = re.compile(r"\b(\d{1,2})\s+([A-Z][a-z]+)\s+(\d{4})\b")
_MDY = re.compile(r"\b([A-Z][a-z]+)\s+(\d{1,2}),\s+(\d{4})\b")
_AMOUNT = re.compile(
    r"(?P<pre>[$€£]|\b(?:USD|EUR|GBP|CHF|JPY)\s?)(?P<num>\d[\d,]*(?:\.\d+)?)"
    r"|(?P<num2>\d[\d,]*(?:\.\d+)?)\s?(?P<post>USD|EUR|GBP|CHF|JPY|dollars|euros|pounds)\b"
)
_CURRENCY = {"$": "USD", "€": "EUR", "£": "GBP", "dollars": "USD", "euros": "EUR",
             "pounds": "GBP"}
_STOPWORDS = {
    "en": {"the", "and", "of", "to", "is", "in", "that", "for", "with", "this", "are", "was"},
    "de": {"der", "die", "und", "das", "ist", "nicht", "mit", "sich", "des", "ein", "eine"},
    "fr": {"le", "la", "les", "et", "des", "est", "une", "pour", "dans", "que", "pas"},
    "es": {"el", "la", "los", "las", "y", "que", "es", "una", "para", "por", "con", "del"},
    "it": {"il", "di", "che", "e", "la", "per", "una", "sono", "non", "con", "gli"},
    "nl": {"de", "het", "een", "en", "van", "is", "dat", "niet", "met", "voor", "zijn"},
    "pt": {"o", "os", "as", "e", "que", "uma", "para", "com", "não", "por", "mais"},
}
_TOPIC_STOP = set().union(*_STOPWORDS.values()) | {
    "have", "has", "been", "will", "would", "which", "their", "there", "from", "they", "were",
    "what", "when", "about", "into", "also", "more", "than", "these", "those", "such", "each",
    "other", "shall", "must", "this", "that", "with", "your", "document", "page"}
_DOC_TYPES = (
    ("invoice", ("invoice", "amount due", "bill to", "payment terms")),
    ("contract", ("agreement", "contract", "hereinafter", "hereby", "the parties")),
    ("email", ("subject:", "from:", "sent:")),
    ("letter", ("dear ", "sincerely", "yours faithfully", "kind regards")),
    ("report", ("report", "findings", "quarter", "results", "analysis")),
    ("form", ("please fill", "signature:", "form")),
)


#: Longest sentence the simulator repeats; a model writes points, not paragraphs.
MAX_SENTENCE = 240


def _clip(sentence: str) -> str:
    if len(sentence) <= MAX_SENTENCE:
        return sentence
    cut = sentence[:MAX_SENTENCE].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


@dataclass
class TextFacts:
    """What the simulator can read off a text without a model."""

    text: str
    _cache: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def sentences(self) -> list[str]:
        # Headings and labels (short lines without final punctuation) are not sentences.
        body = [line for line in self.text.splitlines()
                if not line.lstrip().startswith("#")
                and (len(line) > 80 or line.rstrip().endswith((".", "!", "?", ":", ";")))]
        flat = re.sub(r"\s+", " ", " ".join(body) or self.text).strip()
        parts = [_clip(s.strip()) for s in _SENTENCE.split(flat)]
        good = [s for s in parts if len(s) >= 20]
        return good or ([_clip(flat)] if flat else [])

    @cached_property
    def title(self) -> str | None:
        for line in self.text.splitlines():
            line = line.strip().lstrip("#").strip()
            if line:
                return line[:120]
        return None

    @cached_property
    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for match in _NAME.finditer(self.text):
            words = match.group(1).split()
            while words and words[0] in _NOT_NAMES:
                words.pop(0)
            if len(words) >= 2 and not all(w.isupper() for w in words):
                seen.setdefault(" ".join(words), None)
        return list(seen)[:8]

    @cached_property
    def dates(self) -> list[str]:
        found: list[tuple[int, str]] = []
        for m in _ISO_DATE.finditer(self.text):
            found.append((m.start(), m.group(0)))
        for m in _DMY.finditer(self.text):
            month = _MONTHS.get(m.group(2).lower())
            if month:
                found.append((m.start(), f"{m.group(3)}-{month:02d}-{int(m.group(1)):02d}"))
        for m in _MDY.finditer(self.text):
            month = _MONTHS.get(m.group(1).lower())
            if month:
                found.append((m.start(), f"{m.group(3)}-{month:02d}-{int(m.group(2)):02d}"))
        return [d for _, d in sorted(found)]

    @cached_property
    def amounts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in _AMOUNT.finditer(self.text):
            number = (m.group("num") or m.group("num2") or "0").replace(",", "")
            marker = (m.group("pre") or m.group("post") or "").strip()
            try:
                value = float(number)
            except ValueError:
                continue
            context = self.text[max(0, m.start() - 60) : m.start()].split("\n")[-1].strip(" :")
            out.append({"value": value, "currency": _CURRENCY.get(marker, marker or None),
                        "description": context[-60:] or None})
        return out[:10]

    @cached_property
    def topics(self) -> list[str]:
        counts = Counter(w.lower() for w in _WORD.findall(self.text))
        ranked = [w for w, _ in counts.most_common(40) if w not in _TOPIC_STOP]
        return ranked[:5] or ["general"]

    @cached_property
    def language(self) -> str:
        words = Counter(w.lower() for w in re.findall(r"[^\W\d_]+", self.text[:5000]))
        scores = {lang: sum(words[w] for w in stop) for lang, stop in _STOPWORDS.items()}
        best = max(scores, key=lambda lang: scores[lang])
        return best if scores[best] > 0 else "en"

    @cached_property
    def document_type(self) -> str:
        lowered = self.text[:4000].lower()
        for kind, markers in _DOC_TYPES:
            if any(marker in lowered for marker in markers):
                return kind
        return "article"


def entity_type(name: str) -> str:
    """A plausible entity type for a name found in the text."""
    if any(marker in name.split() or name.endswith(marker) for marker in _ORG_MARKERS):
        return "organization"
    if name in _PLACE_WORDS:
        return "location"
    return "person" if len(name.split()) in (2, 3) else "other"


def generate(schema: dict[str, Any], text: str) -> Any:
    """A value that validates against the strict ``schema``, drawn from ``text``."""
    return _Generator(schema, TextFacts(text)).value(schema, None, None)


#: How deep a recursive schema's value goes: past this many references on the way down, its
#: arrays are empty and its nullable branches null, so a tree ends; past MAX_DEPTH levels,
#: whatever is left is null.
RECURSION_DEPTH = 3
MAX_DEPTH = 32


class _Generator:
    def __init__(self, schema: dict[str, Any], facts: TextFacts) -> None:
        self.root = schema
        self.defs: dict[str, Any] = schema.get("$defs", {}) | schema.get("definitions", {})
        self.facts = facts
        self.depth = 0
        self.references = 0

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in node and seen < 16:  # a chain of refs to refs, never a loop
            ref = node["$ref"]
            node = self.root if ref == "#" else self.defs.get(ref.rsplit("/", 1)[-1], {})
            seen += 1
        return node

    @property
    def recursing(self) -> bool:
        return self.references > RECURSION_DEPTH

    def value(self, node: dict[str, Any], name: str | None, context: dict[str, Any] | None
              ) -> Any:
        if self.depth >= MAX_DEPTH:
            return None
        referenced = "$ref" in node
        self.depth += 1
        self.references += referenced
        try:
            return self._value(node, name, context)
        finally:
            self.depth -= 1
            self.references -= referenced

    def _value(self, node: dict[str, Any], name: str | None, context: dict[str, Any] | None
               ) -> Any:
        node = self.resolve(node)
        if self.recursing and self._allows_null(node):
            return None
        if context and name in context:
            return self.fit(node, context[name])
        nullable = self._allows_null(node)
        if node.get("anyOf"):
            return self._branch(node, name, context, nullable=nullable)
        if "enum" in node:
            return self.enum(node["enum"], name)
        if "const" in node:
            return node["const"]
        types = node.get("type")
        kind = types[0] if isinstance(types, list) else types
        if isinstance(types, list) and nullable:
            kind = next((t for t in types if t != "null"), "null")
            if self.hint(name, node) is None and kind not in ("object", "array"):
                return None
        return self._of_kind(kind, node, name, context)

    def _branch(self, node: dict[str, Any], name: str | None, context: dict[str, Any] | None,
                *, nullable: bool) -> Any:
        """A value for an ``anyOf``: null when nothing hints at one, else the first branch."""
        non_null = [b for b in node["anyOf"] if self.resolve(b).get("type") != "null"]
        if self.hint(name, node) is None and nullable:
            return None
        return self.value(non_null[0], name, context) if non_null else None

    def _of_kind(self, kind: Any, node: dict[str, Any], name: str | None,
                 context: dict[str, Any] | None) -> Any:
        if kind == "object":
            return {key: self.value(child, key, context)
                    for key, child in node.get("properties", {}).items()}
        if kind == "array":
            return self.array(node, name)
        if kind in ("number", "integer"):
            return self._number(kind, node, name)
        if kind in ("boolean", "null"):
            return False if kind == "boolean" else None
        hinted = self.hint(name, node)
        return str(hinted) if hinted is not None else self.fallback_string()

    def _number(self, kind: str, node: dict[str, Any], name: str | None) -> int | float:
        number = self.hint(name, node)
        value = number if isinstance(number, (int, float)) else len(self.facts.sentences)
        return int(value) if kind == "integer" else float(value)

    def fit(self, node: dict[str, Any], value: Any) -> Any:
        node = self.resolve(node)
        if value is None:
            return None if self._allows_null(node) else self.value(node, None, None)
        if "enum" in node:
            return value if value in node["enum"] else node["enum"][0]
        return value

    def _allows_null(self, node: dict[str, Any]) -> bool:
        types = node.get("type")
        return (isinstance(types, list) and "null" in types) or any(
            self.resolve(b).get("type") == "null" for b in node.get("anyOf", [])
        )

    def enum(self, options: list[Any], name: str | None) -> Any:
        hinted = self.hint(name, {})
        if hinted in options:
            return hinted
        if name in ("document_type", "type", "kind", "category"):
            wanted = self.facts.document_type
            if wanted in options:
                return wanted
            if "other" in options:
                return "other"
        return options[0]

    def array(self, node: dict[str, Any], name: str | None) -> list[Any]:
        if self.recursing and node.get("minItems", 0) == 0:
            return []
        declared = node.get("items", {"type": "string"})
        items = self.resolve(declared)
        lowered = (name or "").lower()
        contexts: list[dict[str, Any]] | None = None
        if any(k in lowered for k in ("amount", "price", "total", "payment")):
            contexts = self.facts.amounts
        elif any(k in lowered for k in ("part", "entit", "people", "person", "organi",
                                         "name", "signator")):
            contexts = [{"name": n, "type": entity_type(n), "role": None}
                        for n in self.facts.names]
        if items.get("type") == "object" or "properties" in items or "anyOf" in items:
            rows = contexts if contexts is not None else [{}]
            values = [self.value(declared, None, row) for row in rows]
        elif contexts is not None:
            values = [self.fit(items, row.get("name", row.get("value"))) for row in contexts]
        elif "topic" in lowered or "tag" in lowered or "keyword" in lowered:
            values = list(self.facts.topics)
        elif "date" in lowered:
            values = list(self.facts.dates[:5])
        else:
            values = self.facts.sentences[:5] if items.get("type") in ("string", None) \
                else [self.value(declared, None, None)]
        low, high = node.get("minItems", 0), node.get("maxItems")
        values = values[:high] if high is not None else values
        while len(values) < low:
            values.append(self.value(declared, None, None))
        return values

    def hint(self, name: str | None, node: dict[str, Any]) -> Any:
        facts = self.facts
        lowered = (name or "").lower()
        if not lowered:
            return None
        if "summary" in lowered or "abstract" in lowered:
            return " ".join(facts.sentences[:3])[:600] or facts.text[:300]
        if lowered in ("title", "headline", "subject"):
            return facts.title
        if "date" in lowered:
            return facts.dates[0] if facts.dates else None
        if lowered in ("language", "lang", "language_code"):
            return facts.language
        if lowered in ("document_type", "doc_type"):
            return facts.document_type
        if lowered in ("name",):
            return facts.names[0] if facts.names else facts.title
        if lowered in ("currency",):
            return facts.amounts[0]["currency"] if facts.amounts else None
        if lowered in ("value", "amount", "total"):
            return facts.amounts[0]["value"] if facts.amounts else None
        if lowered in ("role", "description", "context", "note", "notes"):
            return None
        return None

    def fallback_string(self) -> str:
        return self.facts.sentences[0][:200] if self.facts.sentences else "n/a"
