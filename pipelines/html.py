"""An HTML page's text as its reader sees it: a paragraph a line, inline markup inline.

Block elements (paragraphs, headings, list items, table rows, divisions) each end a line;
inline elements (links, emphasis, spans) stay in the line they are in, with HTML's own
whitespace rule: any run of spaces and newlines in the source is one space. Headings keep a
light Markdown structure (``## Title``), list items a bullet or their number, table rows
their cells joined by `` | ``, ``<pre>`` its own lines. Scripts, styles, templates, embedded
objects and form controls are dropped, and so is what the page hides (``hidden``,
``aria-hidden="true"``, ``display: none``, ``visibility: hidden``). So is the page's
navigation boilerplate (``nav``, ``aside``, a ``header`` or ``footer`` outside the article,
and the same ARIA roles), unless the caller asks for the whole page.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

#: Never text: code, styling, embedded objects, form controls.
_DROPPED = frozenset({"script", "style", "noscript", "template", "svg", "math", "canvas",
                      "iframe", "object", "embed", "head", "button", "select", "option",
                      "input", "textarea", "datalist", "map", "audio", "video", "picture"})
#: A page's navigation boilerplate (kept with ``whole_page``).
_BOILERPLATE = frozenset({"nav", "aside"})
_PAGE_FURNITURE = frozenset({"header", "footer"})
_BOILERPLATE_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary",
                                "search", "menu", "menubar"})
#: Each ends the line it is in.
_BLOCKS = frozenset({
    "address", "article", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html", "legend", "li",
    "main", "menu", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "td",
    "tfoot", "th", "thead", "tr", "ul", "aside"})
_HEADINGS = {f"h{n}": "#" * n for n in range(1, 7)}
_SPACE = re.compile(r"[ \t\n\r\f]+")
_HIDING_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)


def html_text(markup: str, *, whole_page: bool = False) -> str:
    """The text of ``markup``, a paragraph a line (see the module's docstring)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    writer = _Lines()
    _walk(soup, writer, whole_page=whole_page, in_content=False)
    return writer.text()


class _Lines:
    """The lines being written: inline text joins the current line, a block ends it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []
        self.prefix = ""

    def inline(self, text: str) -> None:
        self.current.append(text)

    def end_line(self) -> None:
        line = _SPACE.sub(" ", "".join(self.current)).strip()
        self.current = []
        if line:  # a bullet or heading mark waits for the first line its element writes
            self.lines.append(f"{self.prefix}{line}" if self.prefix else line)
            self.prefix = ""

    def verbatim(self, text: str) -> None:
        self.end_line()
        self.lines.extend(line.rstrip() for line in text.strip("\n").split("\n"))

    def text(self) -> str:
        self.end_line()
        return "\n".join(self.lines)


@cache
def _element_types() -> tuple[type[Any], type[Any], type[Any]]:
    """bs4's comment, string and tag classes, imported once (bs4 loads on the first page read,
    not when docpipe starts)."""
    from bs4.element import Comment, NavigableString, Tag

    return Comment, NavigableString, Tag


def _walk(node: Any, out: _Lines, *, whole_page: bool, in_content: bool) -> None:
    Comment, NavigableString, Tag = _element_types()
    for child in node.children:
        if isinstance(child, Comment):
            continue
        if isinstance(child, NavigableString):
            if type(child) is NavigableString:  # not a CDATA, doctype or processing step
                out.inline(str(child))
            continue
        if not isinstance(child, Tag) or _skipped(child, whole_page=whole_page,
                                                   in_content=in_content):
            continue
        name = child.name
        content = in_content or name in ("main", "article")
        if name == "br":
            out.end_line()
        elif name == "pre":
            out.verbatim(child.get_text())
        elif name == "tr":
            out.end_line()
            cells = [_cell_text(cell, whole_page) for cell in child.find_all(["td", "th"],
                                                                            recursive=False)]
            if any(cells):
                out.lines.append(" | ".join(cells))
        elif name in ("img", "area"):
            alt = child.get("alt")
            if isinstance(alt, str) and alt.strip():
                out.inline(f" {alt.strip()} ")
        elif name in _BLOCKS:
            out.end_line()
            out.prefix = _prefix(child) or out.prefix
            _walk(child, out, whole_page=whole_page, in_content=content)
            out.end_line()
        else:
            _walk(child, out, whole_page=whole_page, in_content=content)


def _cell_text(cell: Any, whole_page: bool) -> str:
    inner = _Lines()
    _walk(cell, inner, whole_page=whole_page, in_content=True)
    return " ".join(inner.text().split("\n"))


def _prefix(tag: Any) -> str:
    if tag.name in _HEADINGS:
        return _HEADINGS[tag.name] + " "
    if tag.name == "li":
        parent = tag.find_parent(["ol", "ul"])
        if parent is not None and parent.name == "ol":
            siblings = parent.find_all("li", recursive=False)
            number = next((n for n, li in enumerate(siblings, start=1) if li is tag), 1)
            return f"{number}. "
        return "- "
    return ""


def _skipped(tag: Any, *, whole_page: bool, in_content: bool) -> bool:
    """Whether the element and all it holds are left out."""
    name = tag.name
    if name in _DROPPED:
        return True
    attributes = tag.attrs or {}
    if "hidden" in attributes or str(attributes.get("aria-hidden", "")).lower() == "true":
        return True
    style = attributes.get("style")
    if isinstance(style, str) and _HIDING_STYLE.search(style):
        return True
    if whole_page:
        return False
    if name in _BOILERPLATE or str(attributes.get("role", "")).lower() in _BOILERPLATE_ROLES:
        return True
    return name in _PAGE_FURNITURE and not in_content
