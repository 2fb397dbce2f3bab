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

import io
import posixpath
import zipfile
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from pipelines.errors import DocumentError

#: A DOCX whose parts inflate past this is treated as a zip bomb.
MAX_DOCX_UNCOMPRESSED = 200 * 1024 * 1024

#: What every OLE compound file starts with: an encrypted DOCX, or an old Word .doc.
_COMPOUND_FILE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: The stream Office keeps an encrypted OOXML package in (its name in UTF-16).
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")

#: WordprocessingML, transitional and strict.
_W = ("http://schemas.openxmlformats.org/wordprocessingml/2006/main",
      "http://purl.oclc.org/ooxml/wordprocessingml/main")
_R = ("http://schemas.openxmlformats.org/officeDocument/2006/relationships",
      "http://purl.oclc.org/ooxml/officeDocument/relationships")
_MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_MATH = ("http://schemas.openxmlformats.org/officeDocument/2006/math",
         "http://purl.oclc.org/ooxml/officeDocument/math")
_PACKAGE_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"

#: Word elements by their local name, in either namespace.
_WORD: dict[str, str] = {f"{{{ns}}}{name}": name for ns in _W for name in (
    "body", "p", "r", "t", "tab", "ptab", "br", "cr", "noBreakHyphen", "softHyphen", "tbl",
    "tr", "tc", "sdt", "sdtContent", "sdtPr", "showingPlcHdr", "customXml", "smartTag",
    "hyperlink", "fldSimple", "fldChar", "ins", "del", "moveTo", "moveFrom", "bdo", "dir",
    "footnoteReference", "endnoteReference", "commentReference", "txbxContent", "sectPr",
    "pPr", "rPr", "tcPr", "vMerge", "hMerge", "vanish", "headerReference", "footerReference",
    "titlePg", "pStyle", "numPr", "numId", "ilvl", "outlineLvl", "style", "name", "basedOn",
    "footnote", "endnote", "comment", "num", "abstractNum", "abstractNumId", "lvl", "numFmt",
    "lvlText", "start", "ruby", "rubyBase", "rt", "altChunk", "tblPr", "tblGrid", "trPr")}
_WORD |= {f"{{{ns}}}{name}": f"m:{name}" for ns in _MATH for name in ("oMath", "oMathPara",
                                                                     "t")}
_WORD |= {f"{{{_MC}}}AlternateContent": "mc:AlternateContent",
          f"{{{_MC}}}Choice": "mc:Choice", f"{{{_MC}}}Fallback": "mc:Fallback"}

#: Inside a paragraph: walked for the runs they hold.
_INLINE_WRAPPERS = frozenset({"hyperlink", "smartTag", "customXml", "fldSimple", "ins",
                              "moveTo", "bdo", "dir", "sdtContent", "rubyBase"})
#: Never text a reader sees.
_NOT_SHOWN = frozenset({"del", "moveFrom", "pPr", "rPr", "sdtPr", "tcPr", "tblPr", "tblGrid",
                        "trPr", "rt", "mc:Fallback", "altChunk"})
#: Run content that stands for a character.
_CHARACTERS = {"tab": "\t", "ptab": "\t", "br": "\n", "cr": "\n", "noBreakHyphen": "-"}
#: Number formats Word lays out; any other numbers as decimals.
_ROMAN = ((1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"),
          (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i"))


def docx_text(source: str, data: bytes) -> str:
    """The text of the DOCX ``data`` (see the module's docstring).

    Raises:
        DocumentError: ``encrypted_docx``; ``corrupt_file`` for an old ``.doc``, a file that
            is not a zip, or parts that are not well-formed XML; ``too_large`` for a zip bomb.
    """
    package = _Package(source, data)
    return _Reader(package).read()


def _val(element: Any, attribute: str = "val") -> str | None:
    """A Word attribute, in either namespace."""
    for ns in _W:
        value = element.get(f"{{{ns}}}{attribute}")
        if value is not None:
            return str(value)
    return None


def _on(element: Any) -> bool:
    """Whether a toggle property (``<w:vanish/>``, ``<w:titlePg w:val="0"/>``) is on."""
    return _val(element) not in ("0", "false", "off")


def _children(element: Any, name: str) -> Iterator[Any]:
    return (child for child in element if _WORD.get(child.tag) == name)


def _child(element: Any, name: str) -> Any | None:
    return next(_children(element, name), None)


class _Package:
    """The zip, its relationships, and its parts parsed on demand."""

    def __init__(self, source: str, data: bytes) -> None:
        self.source = source
        if data.startswith(_COMPOUND_FILE):
            if _ENCRYPTED_PACKAGE in data:
                raise DocumentError(source, "the DOCX is encrypted with a password: save a "
                                    "copy without one", code="encrypted_docx")
            raise DocumentError(source, "an old Word document (.doc), not a DOCX: save it "
                                "as .docx", code="corrupt_file")
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise DocumentError(source, "not a readable DOCX (not a zip archive)",
                                code="corrupt_file") from exc
        inflated = sum(info.file_size for info in self.zip.infolist())
        if inflated > MAX_DOCX_UNCOMPRESSED:
            raise DocumentError(source, f"the DOCX inflates to {inflated} bytes (zip bomb?)",
                                code="too_large")
        self.names = set(self.zip.namelist())
        main = next((target for kind, target in self._relationships("").values()
                     if kind == "officeDocument"), "word/document.xml")
        self.main = main
        self.related = self._relationships(main)

    def part(self, name: str) -> Any:
        """The root element of part ``name``."""
        from lxml import etree

        if name not in self.names:
            raise DocumentError(self.source, f"not a readable DOCX: it has no {name}",
                                code="corrupt_file")
        parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True,
                                 remove_pis=True)
        try:
            return etree.fromstring(self.zip.read(name), parser)
        except (etree.XMLSyntaxError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DocumentError(self.source, f"not a readable DOCX: {name} is damaged "
                                f"({exc.__class__.__name__})", code="corrupt_file") from exc

    def related_part(self, kind: str) -> Any | None:
        """The one part related to the main document as ``kind`` (``styles``, ``footnotes``)."""
        target = next((t for k, t in self.related.values() if k == kind), None)
        return self.part(target) if target in self.names else None

    def _relationships(self, part: str) -> dict[str, tuple[str, str]]:
        """``part``'s relationships: id → (type's last segment, target part name)."""
        folder, name = posixpath.split(part)
        rels = posixpath.join(folder, "_rels", f"{name}.rels")
        if rels not in self.names:
            return {}
        found: dict[str, tuple[str, str]] = {}
        for rel in self.part(rels):
            if rel.tag != f"{{{_PACKAGE_RELS}}}Relationship" or rel.get("TargetMode") == \
                    "External":
                continue
            target = rel.get("Target", "")
            target = (target.lstrip("/") if target.startswith("/")
                      else posixpath.normpath(posixpath.join(folder, target)))
            found[rel.get("Id", "")] = (rel.get("Type", "").rsplit("/", 1)[-1], target)
        return found


class _Styles:
    """Which paragraph styles are headings (and at what level) or lists."""

    def __init__(self, root: Any | None) -> None:
        self.level: dict[str, int] = {}
        self.numbering: dict[str, tuple[str, int]] = {}
        if root is None:
            return
        based: dict[str, str] = {}
        own_level: dict[str, int] = {}
        own_numbering: dict[str, tuple[str, int]] = {}
        for style in _children(root, "style"):
            style_id = _val(style, "styleId") or ""
            if (parent := _child(style, "basedOn")) is not None:
                based[style_id] = _val(parent) or ""
            if (level := _heading_level(style)) is not None:
                own_level[style_id] = level
            ppr = _child(style, "pPr")
            if ppr is not None and (numbered := _numbering_of(ppr)) is not None:
                own_numbering[style_id] = numbered
        for style_id in {*based, *own_level, *own_numbering}:
            seen: set[str] = set()
            current: str | None = style_id
            while current and current not in seen:
                seen.add(current)
                if current in own_level:
                    self.level.setdefault(style_id, own_level[current])
                if current in own_numbering:
                    self.numbering.setdefault(style_id, own_numbering[current])
                current = based.get(current)


def _heading_level(style: Any) -> int | None:
    """The heading level of a style: by its built-in name (``heading 2``, ``Title``; Word
    keeps these in English whatever the language), else by its outline level."""
    name_element = _child(style, "name")
    name = ((_val(name_element) if name_element is not None else None) or "").lower()
    if name == "title":
        return 1
    if name.startswith("heading ") and name[8:].isdigit():
        return int(name[8:])
    ppr = _child(style, "pPr")
    outline = _child(ppr, "outlineLvl") if ppr is not None else None
    return _outline_level(outline) if outline is not None else None


def _outline_level(outline: Any) -> int | None:
    """``<w:outlineLvl w:val="1"/>`` as a heading level (2); 9 is body text."""
    value = _val(outline) or "9"
    return int(value) + 1 if value.isdigit() and int(value) < 9 else None


def _numbering_of(ppr: Any) -> tuple[str, int] | None:
    """A paragraph's (or style's) list: its ``numId`` and level, if it has one."""
    numbered = _child(ppr, "numPr")
    if numbered is None:
        return None
    num = _child(numbered, "numId")
    level = _child(numbered, "ilvl")
    num_id = _val(num) if num is not None else None
    ilvl = _val(level) if level is not None else "0"
    if num_id is None:
        return None
    return num_id, int(ilvl) if ilvl and ilvl.isdigit() else 0


class _Numbering:
    """List numbers as Word lays them out: a counter per list and level."""

    def __init__(self, root: Any | None) -> None:
        self.levels: dict[str, dict[int, tuple[str, str, int]]] = {}
        self.counters: dict[str, list[int]] = {}
        if root is None:
            return
        abstract: dict[str, dict[int, tuple[str, str, int]]] = {}
        for definition in _children(root, "abstractNum"):
            levels = abstract.setdefault(_val(definition, "abstractNumId") or "", {})
            for lvl in _children(definition, "lvl"):
                fmt, text, start = (_child(lvl, "numFmt"), _child(lvl, "lvlText"),
                                    _child(lvl, "start"))
                start_at = _val(start) if start is not None else "1"
                levels[int(_val(lvl, "ilvl") or "0")] = (
                    (_val(fmt) if fmt is not None else None) or "decimal",
                    (_val(text) if text is not None else None) or "",
                    int(start_at) if start_at and start_at.lstrip("-").isdigit() else 1)
        for num in _children(root, "num"):
            ref = _child(num, "abstractNumId")
            if ref is not None:
                self.levels[_val(num, "numId") or ""] = abstract.get(_val(ref) or "", {})

    def mark(self, num_id: str, level: int) -> str:
        """The next mark of list ``num_id`` at ``level``: ``-`` for a bullet, ``2.``, ``b)``."""
        levels = self.levels.get(num_id)
        if num_id == "0" or levels is None:
            return ""
        fmt, template, _ = levels.get(level, ("bullet", "", 1))
        if fmt == "bullet":
            return "-"
        if fmt == "none":
            return ""
        counters = self.counters.setdefault(num_id, [])
        while len(counters) <= level:
            counters.append(levels.get(len(counters), ("decimal", "", 1))[2] - 1)
        counters[level] += 1
        del counters[level + 1:]
        mark = template or f"%{level + 1}."
        for index, count in enumerate(counters):
            fmt_at = levels.get(index, ("decimal", "", 1))[0]
            mark = mark.replace(f"%{index + 1}", _number(count, fmt_at))
        return mark


def _number(count: int, fmt: str) -> str:
    if fmt in ("lowerLetter", "upperLetter"):
        letters = chr(ord("a") + (count - 1) % 26) * (1 + (count - 1) // 26)
        return letters.upper() if fmt == "upperLetter" else letters
    if fmt in ("lowerRoman", "upperRoman"):
        roman = _roman(count)
        return roman.upper() if fmt == "upperRoman" else roman
    return str(count)


def _roman(count: int) -> str:
    out = []
    for value, letters in _ROMAN:
        while count >= value > 0:
            out.append(letters)
            count -= value
    return "".join(out)


class _Reader:
    """One walk of a document: its lines, and what is placed after them."""

    def __init__(self, package: _Package) -> None:
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
    def styles(self) -> _Styles:
        return _Styles(self.package.related_part("styles"))

    @cached_property
    def numbering(self) -> _Numbering:
        return _Numbering(self.package.related_part("numbering"))

    @cached_property
    def notes(self) -> dict[str, dict[str, Any]]:
        return _Notes(self.package)

    def read(self) -> str:
        root = self.package.part(self.package.main)
        body = _child(root, "body")
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
            name = _WORD.get(child.tag)
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
        ppr = _child(p, "pPr")
        if ppr is not None and _child(ppr, "sectPr") is not None:
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
            name = _WORD.get(child.tag)
            if name == "r":
                self.run(child, pieces, after)
            elif name in _INLINE_WRAPPERS:
                self.inline(child, pieces, after)
            elif name == "sdt":
                if (content := _shown_content(child)) is not None:
                    self.inline(content, pieces, after)
            elif name in ("m:oMath", "m:oMathPara"):
                pieces.append(" ".join(t.text or "" for t in child.iter()
                                       if _WORD.get(t.tag) == "m:t"))
            elif name == "mc:AlternateContent":
                if (choice := _child(child, "mc:Choice")) is not None:
                    self.inline(choice, pieces, after)
            elif name == "ruby":
                if (base := _child(child, "rubyBase")) is not None:
                    self.inline(base, pieces, after)

    def run(self, r: Any, pieces: list[str], after: list[str]) -> None:
        rpr = _child(r, "rPr")
        if rpr is not None and (hidden := _child(rpr, "vanish")) is not None and _on(hidden):
            return
        for child in r:
            name = _WORD.get(child.tag)
            if name == "t":
                if not any(self.fields):
                    pieces.append(child.text or "")
            elif name in _CHARACTERS:
                pieces.append(_CHARACTERS[name])
            elif name == "fldChar":
                self._field(_val(child, "fldCharType"))
            elif name in ("footnoteReference", "endnoteReference"):
                mark = self._note(name.removesuffix("Reference"), _val(child, "id") or "", after)
                if mark:
                    pieces.append(f"[{mark}]")
            elif name == "commentReference":
                self._comment(_val(child, "id") or "", after)
            elif name == "mc:AlternateContent":
                if (choice := _child(child, "mc:Choice")) is not None:
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
        mark = str(count) if kind == "footnote" else _roman(count)
        text = self._flat(note)
        (after if kind == "footnote" else self.endnotes).append(f"[{mark}] {text}")
        return mark

    def _comment(self, comment_id: str, after: list[str]) -> None:
        comment = self.notes["comment"].get(comment_id)
        if comment is None:
            return
        author = _val(comment, "author")
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
        for sect in body.iter(*(f"{{{ns}}}sectPr" for ns in _W)):
            parent = sect.getparent()
            if not (parent is body or (_WORD.get(parent.tag) == "pPr"
                                       and _WORD.get(parent.getparent().tag) == "p")):
                continue  # an old section's properties kept by change tracking
            first_page = (page := _child(sect, "titlePg")) is not None and _on(page)
            section: dict[str, Any] = {"element": parent}
            for kind in ("header", "footer"):
                refs = dict(inherited[kind])
                for ref in _children(sect, f"{kind}Reference"):
                    rid = next((ref.get(f"{{{ns}}}id") for ns in _R if ref.get(
                        f"{{{ns}}}id")), None)
                    target = self.package.related.get(rid or "", ("", ""))[1]
                    refs[_val(ref, "type") or "default"] = target
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
        ppr = _child(p, "pPr")
        style = None
        level: int | None = None
        numbered = None
        if ppr is not None:
            if (style_ref := _child(ppr, "pStyle")) is not None:
                style = _val(style_ref)
            if (outline := _child(ppr, "outlineLvl")) is not None:
                level = _outline_level(outline)
            numbered = _numbering_of(ppr)
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

    def __init__(self, package: _Package) -> None:
        super().__init__()
        self.package = package

    def __missing__(self, kind: str) -> dict[str, Any]:
        root = self.package.related_part(f"{kind}s")
        notes = {} if root is None else {
            _val(note, "id") or "": note for note in _children(root, kind)
            if _val(note, "type") in (None, "normal")}
        self[kind] = notes
        return notes


def _shown_content(sdt: Any) -> Any | None:
    """A content control's content, unless it shows its placeholder prompt."""
    properties = _child(sdt, "sdtPr")
    if properties is not None and _child(properties, "showingPlcHdr") is not None:
        return None
    return _child(sdt, "sdtContent")


def _continues_merge(cell: Any) -> bool:
    """Whether a table cell continues a cell merged down (or, in old files, across)."""
    properties = _child(cell, "tcPr")
    if properties is None:
        return False
    for name in ("vMerge", "hMerge"):
        merged = _child(properties, name)
        if merged is not None and _val(merged) in (None, "continue"):
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
        kind = _WORD.get(child.tag)
        if kind == name:
            yield child
        elif kind in ("sdt", "customXml", "ins", "moveTo", "sdtContent"):
            yield from _within(child, name)


def _text_boxes(element: Any) -> Iterator[Any]:
    """The text boxes inside a drawing or shape, outermost first, not those of the fallback
    copy Word writes for older readers."""
    for child in element:
        name = _WORD.get(child.tag)
        if name == "txbxContent":
            yield child
        elif name == "mc:AlternateContent":
            if (choice := _child(child, "mc:Choice")) is not None:
                yield from _text_boxes(choice)
        elif name != "mc:Fallback":
            yield from _text_boxes(child)

