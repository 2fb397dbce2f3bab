"""Raw WordprocessingML for what python-docx cannot write: footnotes and endnotes, text
boxes, content controls, fields, tracked changes, smart tags; and Strict Open XML.

Each helper returns markup as Word writes it, for :func:`append` to put into a
python-docx document's body, or :func:`add_notes` to add as a part of its own.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import Any
from xml.sax.saxutils import escape

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_DECLARATIONS = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in {
    "w": W,
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "mc": "http://schemas.openxmlformats.org/markup-compatibility/2006",
    "wp": "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing",
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "wps": "http://schemas.microsoft.com/office/word/2010/wordprocessingShape",
    "v": "urn:schemas-microsoft-com:vml",
    "m": "http://schemas.openxmlformats.org/officeDocument/2006/math",
}.items())
_RELATIONSHIPS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.{}+xml"


def run(text: str, *, hidden: bool = False) -> str:
    properties = "<w:rPr><w:vanish/></w:rPr>" if hidden else ""
    return f'<w:r>{properties}<w:t xml:space="preserve">{escape(text)}</w:t></w:r>'


def paragraph(*inline: str, style: str | None = None) -> str:
    properties = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f"<w:p>{properties}{''.join(inline)}</w:p>"


def smart_tag(text: str) -> str:
    return (f'<w:smartTag w:uri="urn:schemas-microsoft-com:office:smarttags" '
            f'w:element="PlaceName">{run(text)}</w:smartTag>')


def simple_field(instruction: str, result: str) -> str:
    instr = escape(instruction, {'"': "&quot;"})
    return f'<w:fldSimple w:instr="{instr}">{run(result)}</w:fldSimple>'


def complex_field(instruction: str, result: str) -> str:
    """A field as Word writes most: begin, its code, separate, the shown result, end."""
    return ('<w:r><w:fldChar w:fldCharType="begin"/></w:r>'
            f'<w:r><w:instrText xml:space="preserve"> {escape(instruction)} </w:instrText></w:r>'
            '<w:r><w:fldChar w:fldCharType="separate"/></w:r>'
            f'{run(result)}<w:r><w:fldChar w:fldCharType="end"/></w:r>')


def inserted(text: str) -> str:
    return (f'<w:ins w:id="{zlib.crc32(text.encode()) % 10_000}" w:author="Dana Reyes" '
            f'w:date="2026-11-02T10:00:00Z">{run(text)}</w:ins>')


def deleted(text: str) -> str:
    return (f'<w:del w:id="{zlib.crc32(text.encode()) % 10_000 + 1}" w:author="Dana Reyes" '
            f'w:date="2026-11-02T10:00:00Z"><w:r><w:delText xml:space="preserve">'
            f'{escape(text)}</w:delText></w:r></w:del>')


def moved(text: str, *, to: bool) -> str:
    kind = "moveTo" if to else "moveFrom"
    inner = run(text) if to else (f'<w:r><w:delText xml:space="preserve">{escape(text)}'
                                  "</w:delText></w:r>")
    return f'<w:{kind} w:id="{7 if to else 8}" w:author="Dana Reyes">{inner}</w:{kind}>'


def content_control(content: str, *, tag: str, placeholder: bool = False) -> str:
    """A content control (``w:sdt``) around ``content``, inline runs or block paragraphs;
    ``placeholder`` marks it as showing its prompt."""
    shown = "<w:showingPlcHdr/>" if placeholder else ""
    return (f'<w:sdt><w:sdtPr><w:alias w:val="{tag}"/><w:tag w:val="{tag}"/>{shown}'
            f"</w:sdtPr><w:sdtContent>{content}</w:sdtContent></w:sdt>")


def note_reference(kind: str, note_id: int) -> str:
    """A ``footnote`` or ``endnote`` reference mark."""
    return f'<w:r><w:{kind}Reference w:id="{note_id}"/></w:r>'


def text_box(*paragraphs: str, vml_only: bool = False) -> str:
    """A run holding a text box: as Word 2010 on writes it (a DrawingML shape, with a VML
    copy for older readers), or as older Word wrote it (VML only)."""
    content = f"<w:txbxContent>{''.join(paragraphs)}</w:txbxContent>"
    vml = (f'<w:pict><v:shape id="box" style="width:200pt;height:60pt">'
           f"<v:textbox>{content}</v:textbox></v:shape></w:pict>")
    if vml_only:
        return f"<w:r>{vml}</w:r>"
    drawing = ('<w:drawing><wp:anchor distT="0" distB="0" distL="0" distR="0" '
               'simplePos="0" relativeHeight="1" behindDoc="0" locked="0" layoutInCell="1" '
               'allowOverlap="1"><wp:simplePos x="0" y="0"/><wp:extent cx="2540000" '
               'cy="762000"/><wp:docPr id="1" name="Text Box 1"/><a:graphic><a:graphicData '
               'uri="http://schemas.microsoft.com/office/word/2010/wordprocessingShape">'
               f"<wps:wsp><wps:txbx>{content}</wps:txbx><wps:bodyPr/></wps:wsp>"
               "</a:graphicData></a:graphic></wp:anchor></w:drawing>")
    return (f'<w:r><mc:AlternateContent><mc:Choice Requires="wps">{drawing}</mc:Choice>'
            f"<mc:Fallback>{vml}</mc:Fallback></mc:AlternateContent></w:r>")


def append(document: Any, *markup: str) -> list[Any]:
    """Put block markup (paragraphs, tables, content controls) at the end of the body, before
    its section properties; return the elements added."""
    from docx.oxml.parser import parse_xml

    holder = parse_xml(f"<w:body {_DECLARATIONS}>{''.join(markup)}</w:body>")
    body = document.element.body
    added = list(holder)
    for element in added:
        body.sectPr.addprevious(element)
    return added


def append_inline(paragraph: Any, *markup: str) -> None:
    """Put inline markup (runs, fields, tracked changes) at the end of a python-docx
    paragraph."""
    from docx.oxml.parser import parse_xml

    holder = parse_xml(f"<w:p {_DECLARATIONS}>{''.join(markup)}</w:p>")
    for element in list(holder):
        paragraph._p.append(element)


def add_notes(document: Any, kind: str, notes: dict[int, str]) -> None:
    """Add a ``footnotes`` or ``endnotes`` part with ``notes`` (id → text), after the two
    separator notes Word always writes."""
    from docx.opc.packuri import PackURI
    from docx.opc.part import Part

    tag = kind.removesuffix("s")
    body = "".join(
        f'<w:{tag} w:id="{note_id}"><w:p><w:r><w:{tag}Ref/></w:r>{run(" " + text)}</w:p>'
        f"</w:{tag}>" for note_id, text in notes.items())
    xml = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:{kind} {_DECLARATIONS}>'
           f'<w:{tag} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p>'
           f'</w:{tag}><w:{tag} w:type="continuationSeparator" w:id="0"><w:p><w:r>'
           f"<w:continuationSeparator/></w:r></w:p></w:{tag}>{body}</w:{kind}>")
    part = Part(PackURI(f"/word/{kind}.xml"), _CONTENT_TYPE.format(kind), xml.encode(),
                document.part.package)
    document.part.relate_to(part, f"{_RELATIONSHIPS}/{kind}")


def saved(document: Any) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


#: What Word's "Strict Open XML Document" changes: the namespaces of the markup and the
#: relationship types.
_STRICT = {
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main":
        "http://purl.oclc.org/ooxml/wordprocessingml/main",
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships":
        "http://purl.oclc.org/ooxml/officeDocument/relationships",
    "http://schemas.openxmlformats.org/drawingml/2006/main":
        "http://purl.oclc.org/ooxml/drawingml/main",
    "http://schemas.openxmlformats.org/officeDocument/2006/math":
        "http://purl.oclc.org/ooxml/officeDocument/math",
}


def to_strict(data: bytes) -> bytes:
    """The DOCX ``data`` saved as Strict Open XML (ISO/IEC 29500 strict namespaces)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename.endswith((".xml", ".rels")):
                text = content.decode("utf-8")
                for transitional, strict in _STRICT.items():
                    text = text.replace(transitional, strict)
                content = text.encode("utf-8")
            target.writestr(info, content)
    return out.getvalue()
