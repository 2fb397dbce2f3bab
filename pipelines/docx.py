"""A DOCX's text as its reader sees it, everything Word shows, in document order.

The main document part is walked once, in order: paragraphs a line each (a heading style
as ``# Title``, a list paragraph with its bullet or number), tables a row a line with their
cells joined by `` | `` (a merged cell once; a row whose cells hold several lines or a
nested table gives its cells' lines one after another). Each section's headers come before
its body and its footers after it, each distinct text once. Inside a paragraph, what Word
shows is kept and what it does not is dropped:

- kept: hyperlinks, smart tags, custom XML, content controls (not their placeholder
  prompts), simple fields and the shown result of complex fields (not their instructions),
  tracked insertions and moves' new places, math;
- dropped: tracked deletions and moves' old places, hidden (``vanish``) runs, field codes,
  the fallback copy of a drawing Word also writes for older readers;
- placed after the paragraph they belong to: the text boxes anchored in it, its footnotes
  (``[1] …``, the reference kept as ``[1]``), and its comments (``Comment by A: …``);
  endnotes (``[i] …``) close the document.

Strict Open XML (ISO 29500 namespaces) reads the same as the usual transitional form. An
encrypted file (an OLE compound file around the encrypted package, as Office writes it) is
``encrypted_docx``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import Any

from pipelines.errors import DocumentError
from pipelines.wordml import (
    R_NS,
    W_NS,
    WORD,
    Numbering,
    Package,
    Styles,
    attr,
    child_named,
    children_named,
    is_on,
    numbering_of,
    outline_level,
    roman_numeral,
)

#: Inside a paragraph: walked for the runs they hold.
_INLINE_WRAPPERS = frozenset({"hyperlink", "smartTag", "customXml", "fldSimple", "ins",
                              "moveTo", "bdo", "dir", "sdtContent", "rubyBase"})
#: Never text a reader sees.
_NOT_SHOWN = frozenset({"del", "moveFrom", "pPr", "rPr", "sdtPr", "tcPr", "tblPr", "tblGrid",
                        "trPr", "rt", "mc:Fallback", "altChunk"})
#: Run content that stands for a character.
_CHARACTERS = {"tab": "\t", "ptab": "\t", "br": "\n", "cr": "\n", "noBreakHyphen": "-"}


def docx_text(source: str, data: bytes) -> str:
    """The text of the DOCX ``data`` (see the module's docstring).

    Raises:
        DocumentError: ``encrypted_docx``; ``corrupt_file`` for an old ``.doc``, a file that
            is not a zip, or parts that are not well-formed XML; ``too_large`` for a zip bomb.
    """
    package = Package(source, data)
    return _Reader(package).read()


class _Reader:
    """One walk of a document: its lines, and what is placed after them."""

    def __init__(self, package: Package) -> None:
        self.package = package
        self.numbered = {"footnote": 0, "endnote": 0}
        self.endnotes: list[str] = []
        #: One entry per complex field being read: True while in its instruction.
        self.fields: list[bool] = []
        self.sections: list[dict[str, Any]] = []
        self.shown: dict[str, list[str]] = {"header": [], "footer": []}

    # Parts read when the document first needs them: most files use a few styles and no
    # notes, and parsing a template's styles costs more than a short document's body.

    @cached_property
    def styles(self) -> Styles:
        return Styles(self.package.related_part("styles"))

    @cached_property
    def numbering(self) -> Numbering:
        return Numbering(self.package.related_part("numbering"))

    @cached_property
    def notes(self) -> dict[str, dict[str, Any]]:
        return _Notes(self.package)

    def read(self) -> str:
        root = self.package.part(self.package.main)
        body = child_named(root, "body")
        if body is None:
            raise DocumentError(self.package.source, "not a readable DOCX: its main part has "
                                "no body", code="corrupt_file")
        self.sections = self._sections(body)
        lines: list[str] = []
        self._furniture("header", 0, lines)
        self.block(body, lines)
        self._furniture("footer", len(self.sections) - 1, lines)
        lines.extend(self.endnotes)
        return "\n".join(lines)

    # blocks

    def block(self, container: Any, out: list[str]) -> None:
        """Write the paragraphs and tables of ``container`` to ``out``, in order."""
        for child in container:
            name = WORD.get(child.tag)
            if name == "p":
                self.paragraph(child, out)
            elif name == "tbl":
                self.table(child, out)
            elif name == "sdt":
                if (content := _shown_content(child)) is not None:
                    self.block(content, out)
            elif name in ("customXml", "ins", "moveTo", "sdtContent", "txbxContent"):
                self.block(child, out)

    def paragraph(self, p: Any, out: list[str]) -> None:
        pieces: list[str] = []
        after: list[str] = []
        self.inline(p, pieces, after)
        text = "".join(pieces)
        prefix = self._prefix(p) if text.strip() else ""
        for index, line in enumerate(text.split("\n")):
            line = line.strip()
            if line:
                out.append(f"{prefix} {line}" if prefix and index == 0 else line)
        out.extend(after)
        ppr = child_named(p, "pPr")
        if ppr is not None and child_named(ppr, "sectPr") is not None:
            ended = next((i for i, s in enumerate(self.sections) if s["element"] is ppr), None)
            if ended is not None:  # the section this paragraph ends; the next one starts
                self._furniture("footer", ended, out)
                self._furniture("header", ended + 1, out)

    def table(self, tbl: Any, out: list[str]) -> None:
        for row in _rows(tbl):
            cells: list[list[str]] = []
            for cell in _cells(row):
                if _continues_merge(cell):
                    cells.append([])  # a merged cell is read once, where it starts
                    continue
                lines: list[str] = []
                self.block(cell, lines)
                cells.append(lines)
            if all(len(lines) <= 1 for lines in cells):
                texts = [lines[0] if lines else "" for lines in cells]
                filled = [text for text in texts if text]
                if len(filled) == 1:  # a layout table's cell, or one label of a form row
                    out.append(filled[0])
                elif filled:
                    out.append(" | ".join(texts))
            else:
                for lines in cells:
                    out.extend(lines)

    # inside a paragraph

    def inline(self, container: Any, pieces: list[str], after: list[str]) -> None:
        for child in container:
            name = WORD.get(child.tag)
            if name == "r":
                self.run(child, pieces, after)
            elif name in _INLINE_WRAPPERS:
                self.inline(child, pieces, after)
            elif name == "sdt":
                if (content := _shown_content(child)) is not None:
                    self.inline(content, pieces, after)
            elif name in ("m:oMath", "m:oMathPara"):
                pieces.append(" ".join(t.text or "" for t in child.iter()
                                       if WORD.get(t.tag) == "m:t"))
            elif name == "mc:AlternateContent":
                if (choice := child_named(child, "mc:Choice")) is not None:
                    self.inline(choice, pieces, after)
            elif name == "ruby":
                if (base := child_named(child, "rubyBase")) is not None:
                    self.inline(base, pieces, after)

    def run(self, r: Any, pieces: list[str], after: list[str]) -> None:
        rpr = child_named(r, "rPr")
        if rpr is not None and (hidden := child_named(rpr, "vanish")) is not None and is_on(hidden):
            return
        for child in r:
            name = WORD.get(child.tag)
            if name == "t":
                if not any(self.fields):
                    pieces.append(child.text or "")
            elif name in _CHARACTERS:
                pieces.append(_CHARACTERS[name])
            elif name == "fldChar":
                self._field(attr(child, "fldCharType"))
            elif name in ("footnoteReference", "endnoteReference"):
                mark = self._note(name.removesuffix("Reference"), attr(child, "id") or "", after)
                if mark:
                    pieces.append(f"[{mark}]")
            elif name == "commentReference":
                self._comment(attr(child, "id") or "", after)
            elif name == "mc:AlternateContent":
                if (choice := child_named(child, "mc:Choice")) is not None:
                    self.run(choice, pieces, after)
            elif name not in _NOT_SHOWN:
                for box in _text_boxes(child):  # drawings, VML shapes, embedded objects
                    self.block(box, after)

    def _field(self, kind: str | None) -> None:
        if kind == "begin":
            self.fields.append(True)
        elif kind == "separate" and self.fields:
            self.fields[-1] = False
        elif kind == "end" and self.fields:
            self.fields.pop()

    def _note(self, kind: str, note_id: str, after: list[str]) -> str:
        note = self.notes[kind].get(note_id)
        if note is None:
            return ""
        self.numbered[kind] += 1
        count = self.numbered[kind]
        mark = str(count) if kind == "footnote" else roman_numeral(count)
        text = self._flat(note)
        (after if kind == "footnote" else self.endnotes).append(f"[{mark}] {text}")
        return mark

    def _comment(self, comment_id: str, after: list[str]) -> None:
        comment = self.notes["comment"].get(comment_id)
        if comment is None:
            return
        author = attr(comment, "author")
        text = self._flat(comment)
        if text:
            after.append(f"Comment by {author}: {text}" if author else f"Comment: {text}")

    def _flat(self, container: Any) -> str:
        """A note's or comment's paragraphs on one line; its own fields kept apart."""
        outer, self.fields = self.fields, []
        lines: list[str] = []
        self.block(container, lines)
        self.fields = outer
        return " ".join(lines)

    # section furniture

    def _sections(self, body: Any) -> list[dict[str, Any]]:
        """Each section's headers and footers (their part names by type), in order; a type
        a section does not set is its previous section's."""
        sections: list[dict[str, Any]] = []
        inherited: dict[str, dict[str, str]] = {"header": {}, "footer": {}}
        for sect in body.iter(*(f"{{{ns}}}sectPr" for ns in W_NS)):
            parent = sect.getparent()
            if not (parent is body or (WORD.get(parent.tag) == "pPr"
                                       and WORD.get(parent.getparent().tag) == "p")):
                continue  # an old section's properties kept by change tracking
            first_page = (page := child_named(sect, "titlePg")) is not None and is_on(page)
            section: dict[str, Any] = {"element": parent}
            for kind in ("header", "footer"):
                refs = dict(inherited[kind])
                for ref in children_named(sect, f"{kind}Reference"):
                    rid = next((ref.get(f"{{{ns}}}id") for ns in R_NS if ref.get(
                        f"{{{ns}}}id")), None)
                    target = self.package.related.get(rid or "", ("", ""))[1]
                    refs[attr(ref, "type") or "default"] = target
                inherited[kind] = refs
                section[kind] = [refs[t] for t in ("first", "default", "even")
                                 if t in refs and (t != "first" or first_page)]
            sections.append(section)
        return sections

    def _furniture(self, kind: str, index: int, out: list[str]) -> None:
        """Write section ``index``'s headers or footers, unless the section before showed
        the same text."""
        if not 0 <= index < len(self.sections):
            return
        texts: list[str] = []
        for name in self.sections[index][kind]:
            if name in self.package.names:
                lines: list[str] = []
                self.block(self.package.part(name), lines)
                if lines and lines not in [t.split("\n") for t in texts]:
                    texts.append("\n".join(lines))
        for text in texts:
            if text not in self.shown[kind]:
                out.append(text)
        self.shown[kind] = texts

    def _prefix(self, p: Any) -> str:
        ppr = child_named(p, "pPr")
        style = None
        level: int | None = None
        numbered = None
        if ppr is not None:
            if (style_ref := child_named(ppr, "pStyle")) is not None:
                style = attr(style_ref)
            if (outline := child_named(ppr, "outlineLvl")) is not None:
                level = outline_level(outline)
            numbered = numbering_of(ppr)
        if style is not None:
            level = level or self.styles.level.get(style)
            numbered = numbered or self.styles.numbering.get(style)
        if level:
            return "#" * level
        if numbered is not None:
            return self.numbering.mark(*numbered)
        return ""


class _Notes(dict[str, dict[str, Any]]):
    """Footnotes, endnotes and comments by kind and id, each kind's part read when first
    referred to (a note's separators are not notes)."""

    def __init__(self, package: Package) -> None:
        super().__init__()
        self.package = package

    def __missing__(self, kind: str) -> dict[str, Any]:
        root = self.package.related_part(f"{kind}s")
        notes = {} if root is None else {
            attr(note, "id") or "": note for note in children_named(root, kind)
            if attr(note, "type") in (None, "normal")}
        self[kind] = notes
        return notes


def _shown_content(sdt: Any) -> Any | None:
    """A content control's content, unless it shows its placeholder prompt."""
    properties = child_named(sdt, "sdtPr")
    if properties is not None and child_named(properties, "showingPlcHdr") is not None:
        return None
    return child_named(sdt, "sdtContent")


def _continues_merge(cell: Any) -> bool:
    """Whether a table cell continues a cell merged down (or, in old files, across)."""
    properties = child_named(cell, "tcPr")
    if properties is None:
        return False
    for name in ("vMerge", "hMerge"):
        merged = child_named(properties, name)
        if merged is not None and attr(merged) in (None, "continue"):
            return True
    return False


def _rows(tbl: Any) -> Iterator[Any]:
    yield from _within(tbl, "tr")


def _cells(row: Any) -> Iterator[Any]:
    yield from _within(row, "tc")


def _within(container: Any, name: str) -> Iterator[Any]:
    """``container``'s ``name`` children, including those wrapped in content controls,
    custom XML or tracked insertions."""
    for child in container:
        kind = WORD.get(child.tag)
        if kind == name:
            yield child
        elif kind in ("sdt", "customXml", "ins", "moveTo", "sdtContent"):
            yield from _within(child, name)


def _text_boxes(element: Any) -> Iterator[Any]:
    """The text boxes inside a drawing or shape, outermost first, not those of the fallback
    copy Word writes for older readers."""
    for child in element:
        name = WORD.get(child.tag)
        if name == "txbxContent":
            yield child
        elif name == "mc:AlternateContent":
            if (choice := child_named(child, "mc:Choice")) is not None:
                yield from _text_boxes(choice)
        elif name != "mc:Fallback":
            yield from _text_boxes(child)
