"""A DOCX package as its reader needs it: the zip, checked for encryption and for bombs,
its parts and their relationships, the styles that make headings, and the numbering that
makes lists. Both forms of WordprocessingML are read: transitional, and Strict Open XML
(ISO 29500 namespaces). The reader that walks the parts in order is :mod:`pipelines.docx`.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Iterator
from typing import Any

from pipelines.errors import DocumentError

#: A DOCX whose parts inflate past this is treated as a zip bomb.
MAX_DOCX_UNCOMPRESSED = 200 * 1024 * 1024

#: What every OLE compound file starts with: an encrypted DOCX, or an old Word .doc.
_COMPOUND_FILE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: The stream Office keeps an encrypted OOXML package in (its name in UTF-16).
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")

#: WordprocessingML, transitional and strict.
W_NS = ("http://schemas.openxmlformats.org/wordprocessingml/2006/main",
        "http://purl.oclc.org/ooxml/wordprocessingml/main")
R_NS = ("http://schemas.openxmlformats.org/officeDocument/2006/relationships",
        "http://purl.oclc.org/ooxml/officeDocument/relationships")
_MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_MATH = ("http://schemas.openxmlformats.org/officeDocument/2006/math",
         "http://purl.oclc.org/ooxml/officeDocument/math")
_PACKAGE_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"

#: Word elements by their local name, in either namespace.
WORD: dict[str, str] = {f"{{{ns}}}{name}": name for ns in W_NS for name in (
    "body", "p", "r", "t", "tab", "ptab", "br", "cr", "noBreakHyphen", "softHyphen", "tbl",
    "tr", "tc", "sdt", "sdtContent", "sdtPr", "showingPlcHdr", "customXml", "smartTag",
    "hyperlink", "fldSimple", "fldChar", "ins", "del", "moveTo", "moveFrom", "bdo", "dir",
    "footnoteReference", "endnoteReference", "commentReference", "txbxContent", "sectPr",
    "pPr", "rPr", "tcPr", "vMerge", "hMerge", "vanish", "headerReference", "footerReference",
    "titlePg", "pStyle", "numPr", "numId", "ilvl", "outlineLvl", "style", "name", "basedOn",
    "footnote", "endnote", "comment", "num", "abstractNum", "abstractNumId", "lvl", "numFmt",
    "lvlText", "start", "ruby", "rubyBase", "rt", "altChunk", "tblPr", "tblGrid", "trPr")}
WORD |= {f"{{{ns}}}{name}": f"m:{name}" for ns in _MATH
         for name in ("oMath", "oMathPara", "t")}
WORD |= {f"{{{_MC}}}AlternateContent": "mc:AlternateContent",
         f"{{{_MC}}}Choice": "mc:Choice", f"{{{_MC}}}Fallback": "mc:Fallback"}

#: Number formats Word lays out; any other numbers as decimals.
_ROMAN = ((1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"),
          (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i"))


def attr(element: Any, attribute: str = "val") -> str | None:
    """A Word attribute, in either namespace."""
    for ns in W_NS:
        value = element.get(f"{{{ns}}}{attribute}")
        if value is not None:
            return str(value)
    return None


def is_on(element: Any) -> bool:
    """Whether a toggle property (``<w:vanish/>``, ``<w:titlePg w:val="0"/>``) is on."""
    return attr(element) not in ("0", "false", "off")


def children_named(element: Any, name: str) -> Iterator[Any]:
    """The children of ``element`` that are the Word element ``name``, in either namespace."""
    return (child for child in element if WORD.get(child.tag) == name)


def child_named(element: Any, name: str) -> Any | None:
    """The first child of ``element`` that is the Word element ``name``, or None."""
    return next(children_named(element, name), None)


class Package:
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


class Styles:
    """Which paragraph styles are headings (and at what level) or lists."""

    def __init__(self, root: Any | None) -> None:
        self.level: dict[str, int] = {}
        self.numbering: dict[str, tuple[str, int]] = {}
        if root is None:
            return
        based: dict[str, str] = {}
        own_level: dict[str, int] = {}
        own_numbering: dict[str, tuple[str, int]] = {}
        for style in children_named(root, "style"):
            style_id = attr(style, "styleId") or ""
            if (parent := child_named(style, "basedOn")) is not None:
                based[style_id] = attr(parent) or ""
            if (level := heading_level(style)) is not None:
                own_level[style_id] = level
            ppr = child_named(style, "pPr")
            if ppr is not None and (numbered := numbering_of(ppr)) is not None:
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


def heading_level(style: Any) -> int | None:
    """The heading level of a style: by its built-in name (``heading 2``, ``Title``; Word
    keeps these in English whatever the language), else by its outline level."""
    name_element = child_named(style, "name")
    name = ((attr(name_element) if name_element is not None else None) or "").lower()
    if name == "title":
        return 1
    if name.startswith("heading ") and name[8:].isdigit():
        return int(name[8:])
    ppr = child_named(style, "pPr")
    outline = child_named(ppr, "outlineLvl") if ppr is not None else None
    return outline_level(outline) if outline is not None else None


def outline_level(outline: Any) -> int | None:
    """``<w:outlineLvl w:val="1"/>`` as a heading level (2); 9 is body text."""
    value = attr(outline) or "9"
    return int(value) + 1 if value.isdigit() and int(value) < 9 else None


def numbering_of(ppr: Any) -> tuple[str, int] | None:
    """A paragraph's (or style's) list: its ``numId`` and level, if it has one."""
    numbered = child_named(ppr, "numPr")
    if numbered is None:
        return None
    num = child_named(numbered, "numId")
    level = child_named(numbered, "ilvl")
    num_id = attr(num) if num is not None else None
    ilvl = attr(level) if level is not None else "0"
    if num_id is None:
        return None
    return num_id, int(ilvl) if ilvl and ilvl.isdigit() else 0


class Numbering:
    """List numbers as Word lays them out: a counter per list and level."""

    def __init__(self, root: Any | None) -> None:
        self.levels: dict[str, dict[int, tuple[str, str, int]]] = {}
        self.counters: dict[str, list[int]] = {}
        if root is None:
            return
        abstract: dict[str, dict[int, tuple[str, str, int]]] = {}
        for definition in children_named(root, "abstractNum"):
            levels = abstract.setdefault(attr(definition, "abstractNumId") or "", {})
            for lvl in children_named(definition, "lvl"):
                fmt, text, start = (child_named(lvl, "numFmt"), child_named(lvl, "lvlText"),
                                    child_named(lvl, "start"))
                start_at = attr(start) if start is not None else "1"
                levels[int(attr(lvl, "ilvl") or "0")] = (
                    (attr(fmt) if fmt is not None else None) or "decimal",
                    (attr(text) if text is not None else None) or "",
                    int(start_at) if start_at and start_at.lstrip("-").isdigit() else 1)
        for num in children_named(root, "num"):
            ref = child_named(num, "abstractNumId")
            if ref is not None:
                self.levels[attr(num, "numId") or ""] = abstract.get(attr(ref) or "", {})

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
        roman = roman_numeral(count)
        return roman.upper() if fmt == "upperRoman" else roman
    return str(count)


def roman_numeral(count: int) -> str:
    """``count`` in lower-case Roman numerals (``xiv``)."""
    out = []
    for value, letters in _ROMAN:
        while count >= value > 0:
            out.append(letters)
            count -= value
    return "".join(out)
