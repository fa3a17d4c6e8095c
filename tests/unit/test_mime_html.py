"""gateway.mime.html: what a recipient sees of an HTML body."""

from __future__ import annotations

import time

import pytest

from gateway.mime.html import Link, links, render, visible_text

VISIBLE = [
    # (html, visible text)
    ("<p>Hello <b>World</b></p>", "Hello World"),
    ("Hello&nbsp;&amp;&#160;World &lt;3 &euro; &#x2764;", "Hello & World <3 € ❤"),
    ("<p>one</p><p>two</p><div>three<br>four</div>", "one\ntwo\nthree\nfour"),
    ("a<br/>b<br>c</br>d", "a\nb\nc\nd"),
    (
        "<table><tr><td>Hauptstr. 5</td><td>10115 Berlin</td></tr><tr><td>x</td></tr></table>",
        "Hauptstr. 5 10115 Berlin\nx",
    ),
    ("  lots   of \n\t whitespace  ", "lots of whitespace"),
    ("<p>  \n  </p><p>x</p>\n\n<p></p>", "x"),
    ("<ul><li>a<li>b</ul>", "a\nb"),
    # Never rendered as text
    ("<head><title>Title</title><style>p{color:red}</style></head><body>Body</body>", "Body"),
    ("<script>var unsubscribe = 1;</script>x", "x"),
    ("<style>.a{}</style><style>.b{}</style>x", "x"),
    ("<!-- unsubscribe -->x<!---->y", "xy"),
    ("x<!-- unterminated comment <p>abmelden</p>", "x"),
    ("<![if !mso]>shown<![endif]>", "shown"),
    ("<![CDATA[abmelden]]>x", "x"),  # a bogus comment up to the first ">", as in browsers
    ("<![CDATA[a>b]]>x", "b]]>x"),
    ('<img src="x.png" alt="Unsubscribe">x', "x"),
    ("<template>t</template><iframe>i</iframe>x", "x"),
    # Hidden by inline style or attribute
    ('<div style="display:none">hidden</div>shown', "shown"),
    ('<div style="DISPLAY : NONE !important">hidden</div>shown', "shown"),
    ('<div style="display:none;display:block">shown</div>', "shown"),
    ('<div style="display:none!important;display:block">hidden</div>x', "x"),
    ('<div style="display:/* c */none">hidden</div>x', "x"),
    ('<div style="display:n\\6f ne">hidden</div>x', "x"),
    ('<span style="visibility:hidden">hidden</span>shown', "shown"),
    ('<span style="visibility:hidden">a<b style="visibility:visible">b</b></span>', "b"),
    ('<div hidden>hidden</div><div hidden style="display:block">shown</div>', "shown"),
    ('<div style="opacity:0">hidden</div>x', "x"),
    ('<div style="max-height:0;overflow:hidden">preheader</div>x', "x"),
    ('<td style="font-size:0"><div style="font-size:14px">column</div></td>', "column"),
    ('<span style="font-size:0px">hidden</span>x', "x"),
    # Hidden subtrees with sloppy markup
    ('<div style="display:none"><p>a<br><img src=x><p>b<li>c</div>shown', "shown"),
    ('<div style="display:none"><span>unclosed</div>shown', "shown"),
    ('<p style="display:none">preheader<p>shown', "shown"),
    ('<table><tr><td style="display:none">a<td>b</table>', "b"),
    ('<div style="display:none"/>still hidden</div>shown', "shown"),
    ('<div style="display:none">a</span></b></td>b</div>c', "c"),
    # Hidden by simple rules of a <style> block (class, id, tag, tag.class)
    ("<style>.pre{display:none}</style><div class=pre>hidden</div>shown", "shown"),
    (
        '<style>.PRE { display: none !important }</style><div class="x pre" style="display:block">h</div>s',
        "s",
    ),
    ('<style>.pre{display:none}</style><div class=pre style="display:block">shown</div>', "shown"),
    (
        "<style>span.h{visibility:hidden} #i{display:none}</style><span class=h>a</span><b class=h>b</b>"
        "<p id=I>c</p><p>d</p>",
        "b\nd",
    ),
    ("<style>@import url(x.css); .h{display:none}</style><div class=h>hidden</div>x", "x"),
    # ... but not conditional, commented-out or complex ones
    ("<style>@media (max-width:600px) { .m{display:none} }</style><div class=m>shown</div>", "shown"),
    ("<!--[if mso]><style>.x{display:none}</style><![endif]--><div class=x>shown</div>", "shown"),
    ("<style>div .x{display:none} .a:hover{display:none}</style><div class=x>shown</div>", "shown"),
    # Invisible characters and text in <head>
    ("Ab&shy;mel&shy;den&#8203;!", "Abmelden!"),
    ("<head><meta charset=utf-8>Text in head</head>", "Text in head"),
    ("", ""),
    ("plain text, no tags", "plain text, no tags"),
]


@pytest.mark.parametrize(("html", "expected"), VISIBLE)
def test_visible_text(html: str, expected: str) -> None:
    assert visible_text(html) == expected


LINKS = [
    ('<a href="https://x.example/u">Unsubscribe</a>', [Link("https://x.example/u", "Unsubscribe", False)]),
    (
        '<a href="https://x.example/u">Click <b>here</b></a>',
        [Link("https://x.example/u", "Click here", False)],
    ),
    ('<a href=" https://x.example/\n1 ">x</a>', [Link("https://x.example/1", "x", False)]),
    ('<a href="https://x.example/?a=1&amp;b=2">x</a>', [Link("https://x.example/?a=1&b=2", "x", False)]),
    (
        '<a href="https://x.example/u"><img alt="Unsubscribe" src="b.png"></a>',
        [Link("https://x.example/u", "", False)],
    ),
    (
        '<div style="display:none"><a href="https://x.example/u">Unsubscribe</a></div>',
        [Link("https://x.example/u", "Unsubscribe", True)],
    ),
    (
        '<a href="https://x.example/u" style="display:none">Unsubscribe</a>',
        [Link("https://x.example/u", "Unsubscribe", True)],
    ),
    (
        '<a href="https://x.example/u"><span style="display:none">Unsubscribe</span></a>',
        [Link("https://x.example/u", "", False)],
    ),
    (
        '<a href="https://x.example/u" style="visibility:hidden">x'
        '<span style="visibility:visible">y</span></a>',
        [Link("https://x.example/u", "y", False)],
    ),
    (
        '<a name="top">anchor</a><a href="mailto:a@x.example">mail</a>',
        [Link("mailto:a@x.example", "mail", False)],
    ),
    ('<a href="1">one<a href="2">two</a>', [Link("1", "one", False), Link("2", "two", False)]),
    ('<p><a href="1">unclosed<p>next', [Link("1", "unclosed", False)]),
    ("<a href>empty</a>", [Link("", "empty", False)]),
]


@pytest.mark.parametrize(("html", "expected"), LINKS)
def test_links(html: str, expected: list[Link]) -> None:
    assert links(html) == expected


def test_link_offsets_point_into_visible_text() -> None:
    rendered = render('<p>To unsubscribe click <a href="https://x.example/u">here</a>.</p>')
    (span,) = rendered.links
    assert rendered.text[span.start : span.end] == "here"
    assert rendered.text == "To unsubscribe click here."


def test_image_buttons_are_flagged() -> None:
    rendered = render(
        '<a href="1"><img src="b.png" width="120"></a>'
        '<a href="2"><img src="pixel.gif" width="1" height="1"></a>'
        '<a href="3"><img src="b.png" style="display:none"></a>'
    )
    assert [s.has_image for s in rendered.links] == [True, False, False]


@pytest.mark.parametrize(
    "html",
    [
        "<a " * 200_000,  # quadratic in the stdlib parser without the EOF handling
        "</" * 200_000,
        "<?" * 200_000,
        "<!-- a>" * 100_000,
        "<![if x>" * 100_000,
        "<![foo[" * 100_000,  # the stdlib parser raises AssertionError on this
        "<a b='x>" * 100_000,
        "<b><i>" * 100_000 + "</u>" * 100_000,
        "<div>" * 100_000 + "x" + "</div>" * 100_000,
        "<p>" + "&" * 500_000,
        '<div style="' + "display:none;" * 100_000 + '">x</div>',
        "<style>" + "{" * 300_000 + "</style>x",
        "<style>" + ".a{display:none}" * 100_000 + "</style>" + "<p class=a>x</p>" * 10_000,
    ],
    ids=lambda h: repr(h[:12]),
)
def test_pathological_html_is_fast(html: str) -> None:
    started = time.monotonic()
    result = render(html)
    assert isinstance(result.text, str)
    assert time.monotonic() - started < 10


def test_large_html_is_capped_keeping_the_footer() -> None:
    body = "<p>" + "filler text " * 600_000 + "</p>"  # ~7 MB
    text = visible_text(body + '<p>Footer <a href="https://x.example/u">unsubscribe</a></p>')
    assert text.endswith("Footer unsubscribe")
    assert len(text) < 4_500_000


@pytest.mark.parametrize(
    "html", ["<", "<<>>", "<a href=", "&#xZZ;", "<\x00>", "<a href='\udcff'>x</a>", "</>"]
)
def test_garbage_never_raises(html: str) -> None:
    assert isinstance(visible_text(html), str)
    assert isinstance(links(html), list)
