"""An HTML page's text: a paragraph a line, inline markup inline, boilerplate and hidden
text left out."""

from __future__ import annotations

import pytest

from pipelines.documents import Reading, SourceDocument, read_bytes
from pipelines.html import html_text
from tests.support.extraction import (
    NEWS_PAGE,
    Sample,
    html_corpus,
    one_line_share,
    precision,
    recall,
)


@pytest.mark.parametrize("sample", html_corpus(), ids=lambda sample: sample.name)
def test_the_corpus_reads_as_a_reader_would(sample: Sample) -> None:
    (document,) = read_bytes(sample.name, sample.data, sample.media_type)
    assert isinstance(document, SourceDocument), document
    assert recall(sample.expected, document.text) == 1.0
    assert precision(sample.expected, document.text) == 1.0
    assert one_line_share(sample.expected, document.text) == 1.0
    assert document.text.count("\n") == sample.expected.count("\n")  # a line a block


def test_inline_markup_stays_in_its_line() -> None:
    markup = ("<p>supported institutionally by the\n<a href='/m'>Mozilla Foundation</a>\n"
              "and its tax-paying subsidiary, the\n<a href='/c'>Mozilla Corporation</a>\n.</p>")
    assert html_text(markup) == ("supported institutionally by the Mozilla Foundation and its "
                                 "tax-paying subsidiary, the Mozilla Corporation .")


def test_words_split_only_by_markup_stay_one_word() -> None:
    assert html_text("<p>re<b>mark</b>able <i>H</i>2<sub>O</sub></p>") == "remarkable H2O"


@pytest.mark.parametrize("hidden", [
    '<div hidden>secret</div>', '<div aria-hidden="true">secret</div>',
    '<div style="color: red; display:none">secret</div>',
    '<span style="visibility: hidden">secret</span>',
    "<script>secret()</script>", "<style>.secret{}</style>", "<template>secret</template>",
    "<noscript>secret</noscript>", "<form><input value='secret'><button>secret</button></form>",
])
def test_what_the_page_hides_is_left_out(hidden: str) -> None:
    assert html_text(f"<body><p>shown</p>{hidden}</body>") == "shown"


def test_boilerplate_is_left_out_unless_the_whole_page_is_asked_for() -> None:
    article = html_text(NEWS_PAGE)
    whole = html_text(NEWS_PAGE, whole_page=True)
    for furniture in ("Home", "Related", "Privacy"):
        assert furniture not in article
        assert furniture in whole
    assert "Subscribe now" not in whole, "hidden text stays hidden in the whole page"


def test_a_header_inside_the_article_is_content() -> None:
    markup = ("<body><header>Site menu</header><article><header><h1>Title</h1></header>"
              "<p>Body.</p><footer>Filed under: harbours</footer></article></body>")
    assert html_text(markup) == "# Title\nBody.\nFiled under: harbours"


def test_lists_number_and_nest() -> None:
    markup = ("<ol><li>one</li><li>two<ul><li>inner</li></ul></li></ol>"
              "<ul><li><p>para in item</p><p>second para</p></li></ul>")
    assert html_text(markup) == "1. one\n2. two\n- inner\n- para in item\nsecond para"


def test_a_table_is_a_row_a_line_with_nested_tables_inline() -> None:
    markup = ("<table><tr><th>Name</th><th>Notes</th></tr>"
              "<tr><td>A</td><td><table><tr><td>x</td><td>y</td></tr></table></td></tr>"
              "<tr><td></td><td></td></tr></table>")
    assert html_text(markup) == "Name | Notes\nA | x | y"


def test_preformatted_text_keeps_its_lines_and_breaks_end_lines() -> None:
    assert html_text("<p>a<br>b</p><pre>  x = 1\n  y = 2</pre>") == "a\nb\n  x = 1\n  y = 2"


def test_image_alt_text_is_kept_inline() -> None:
    assert html_text('<p>Logo: <img src="l.png" alt="Acme"> ltd</p>') == "Logo: Acme ltd"


def test_the_whole_page_is_read_when_the_caller_asks() -> None:
    (article,) = read_bytes("p.html", NEWS_PAGE.encode(), "text/html")
    (whole,) = read_bytes("p.html", NEWS_PAGE.encode(), "text/html",
                         reading=Reading(html_whole_page=True))
    assert isinstance(article, SourceDocument) and isinstance(whole, SourceDocument)
    assert "Weather" not in article.text and "Weather" in whole.text
    assert article.content_hash != whole.content_hash
