"""Reduce HTML mail to what the recipient sees: visible text and links.

Built on the stdlib ``html.parser`` with the few browser rules that matter for
compliance checks: content of <head>, <style>, <script> and comments is not
shown; elements hidden by CSS (display:none, visibility:hidden, opacity:0,
zero-height overflow:hidden) or by the ``hidden`` attribute hide their subtree;
image alt text is not text. CSS is read from ``style`` attributes and from
simple selectors (tag, .class, #id) in <style> blocks. A sender must not be
able to satisfy a check with words the recipient cannot see, so ambiguities
are resolved towards "not visible".

The parser is also hardened against inputs that make ``html.parser`` slow
(quadratic re-scanning of unterminated tags) or raise (unknown ``<![`` sections).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser

__all__ = [
    "DEFAULT_MAX_HTML_CHARS",
    "Link",
    "LinkSpan",
    "RenderedHtml",
    "links",
    "render",
    "visible_text",
]

# Bounds parsing time for direct callers; parts from gateway.mime.parts are
# already capped to 1 MiB.
DEFAULT_MAX_HTML_CHARS = 4 * 1024 * 1024

# Elements whose content is never rendered as text.
_SKIP = frozenset({"head", "title", "style", "script", "template", "iframe", "noframes", "object"})
# What may legitimately sit in <head>; anything else starts the body, as in browsers.
_HEAD_CONTENT = frozenset({"title", "meta", "link", "style", "script", "base", "noscript", "template", "xml"})
_VOID = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen",
        "link", "meta", "param", "source", "track", "wbr",
    }
)  # fmt: skip
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "center",
        "dd", "details", "dialog", "dir", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5",
        "h6", "header", "hgroup", "hr", "html", "legend", "li", "main", "menu",
        "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot",
        "thead", "tr", "ul",
    }
)  # fmt: skip
# Cells of one table row sit side by side: a space, not a line break.
_CELL = frozenset({"td", "th"})

# Start tags that implicitly close an open element (HTML tree-building rules,
# reduced to what affects hiding): tag -> (closes, stops the search at).
_P_CLOSERS = _BLOCK - {"body", "html", "caption", "tbody", "tfoot", "thead", "tr"}
_SCOPE = frozenset({"table", "td", "th", "caption", "html", "button", "object", "template"})
_IMPLIED_END: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "li": (frozenset({"li"}), frozenset({"ul", "ol"}) | _SCOPE),
    "dt": (frozenset({"dt", "dd"}), frozenset({"dl"}) | _SCOPE),
    "dd": (frozenset({"dt", "dd"}), frozenset({"dl"}) | _SCOPE),
    "td": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    "th": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    "tr": (frozenset({"tr", "td", "th"}), frozenset({"table", "thead", "tbody", "tfoot"})),
    "tbody": (frozenset({"tr", "td", "th", "thead", "tbody", "tfoot"}), frozenset({"table"})),
    "thead": (frozenset({"tr", "td", "th", "thead", "tbody", "tfoot"}), frozenset({"table"})),
    "tfoot": (frozenset({"tr", "td", "th", "thead", "tbody", "tfoot"}), frozenset({"table"})),
    "option": (frozenset({"option"}), frozenset({"select", "datalist"})),
    "a": (frozenset({"a"}), _SCOPE),
}

# Invisible characters used to pad preheaders or split words ("Ab&shy;melden").
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u034f\u200b\u200c\u200d\u2060\ufeff"), None)
_WS = re.compile(r"\s+")
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|$)", re.S)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)", re.S)
_ZERO = re.compile(r"^[+-]?(?:0+\.?0*|\.0+)(?:px|pt|em|rem|%|ex|ch|vh|vw|cm|mm|in|pc)?$")


@dataclass(frozen=True)
class Link:
    """An ``<a href>``: its URL, its visible text and whether it is hidden."""

    url: str
    text: str
    hidden: bool


@dataclass(frozen=True)
class LinkSpan:
    """A link and where its text sits in :attr:`RenderedHtml.text` (start == end if empty)."""

    link: Link
    start: int
    end: int
    has_image: bool = False  # a visible <img> inside (an image button)


@dataclass(frozen=True)
class RenderedHtml:
    """Visible text plus the links with their offsets into that text."""

    text: str
    links: tuple[LinkSpan, ...] = ()


def _css_unescape(value: str) -> str:
    # Clients honour CSS escapes, so "display:n\6f ne" hides like "display:none".
    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            try:
                return chr(int(m.group(1), 16))
            except (ValueError, OverflowError):
                return "\ufffd"
        return m.group(2)

    return _CSS_ESCAPE.sub(repl, value)


def _parse_declarations(style: str) -> tuple[dict[str, str], frozenset[str]]:
    """CSS declarations (last wins) and the names that were ``!important``."""
    result: dict[str, str] = {}
    important: set[str] = set()
    if not style:
        return result, frozenset()
    for decl in _css_unescape(_CSS_COMMENT.sub(" ", style)).split(";"):
        name, sep, value = decl.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        value = value.strip().lower()
        is_important = value.endswith("important") and "!" in value
        if is_important:
            value = value[: value.rindex("!")].strip()
        if name in important and not is_important:
            continue
        if is_important:
            important.add(name)
        result[name] = " ".join(value.split())
    return result, frozenset(important)


def _cascade(sources: list[tuple[dict[str, str], frozenset[str]]]) -> dict[str, str]:
    """Merge declaration blocks in ascending precedence, honouring ``!important``."""
    result: dict[str, str] = {}
    important: set[str] = set()
    for values, marked in sources:
        for name, value in values.items():
            if name in important and name not in marked:
                continue
            result[name] = value
            if name in marked:
                important.add(name)
    return result


# Only these properties decide whether text is visible.
_VISIBILITY_PROPS = frozenset(
    {"display", "visibility", "opacity", "overflow", "max-height", "height", "font-size"}
)
# "tag", ".class", "#id", "tag.class", "tag#id": what templates use to hide
# preheaders and the like. Combinators and pseudo-classes are not evaluated.
_SIMPLE_SELECTOR = re.compile(r"^([a-z][a-z0-9-]*)?(?:([.#])([\w-]+))?$", re.IGNORECASE)
_MAX_SHEET_RULES = 10_000


class _StyleSheet:
    """The visibility-relevant rules of the document's <style> blocks.

    Rules inside @media and other at-blocks are ignored: they are conditional
    (mobile layouts), and the unconditional rules are what every client applies.
    """

    def __init__(self) -> None:
        # key (".class", "#id" or "tag") -> required tag -> (specificity, order, values, important).
        # Rules with the same selector are merged as they are added, so matching
        # an element costs O(its classes) however often a sender repeats a rule.
        self._rules: dict[str, dict[str | None, _Rule]] = {}
        self._count = 0

    def __bool__(self) -> bool:
        return self._count > 0

    def add(self, css: str) -> None:
        for selectors, body in _top_level_rules(css):
            values, important = _parse_declarations(body)
            values = {k: v for k, v in values.items() if k in _VISIBILITY_PROPS}
            if not values:
                continue
            for selector in selectors.split(","):
                match = _SIMPLE_SELECTOR.match(selector.strip())
                if match is None or not (match.group(1) or match.group(2)):
                    continue
                if self._count >= _MAX_SHEET_RULES:
                    return
                self._count += 1
                self._add_rule(match.group(1), match.group(2), match.group(3), values, important)

    def _add_rule(
        self,
        tag: str | None,
        kind: str | None,
        name: str | None,
        values: dict[str, str],
        important: frozenset[str],
    ) -> None:
        key = kind + name.lower() if kind and name else (tag or "").lower()
        specificity = (100 if kind == "#" else 10 if kind else 0) + (1 if tag else 0)
        required = tag.lower() if kind and tag else None
        by_tag = self._rules.setdefault(key, {})
        old = by_tag.get(required)
        if old is not None:
            values = _cascade([(old.values, old.important), (values, important)])
            important = old.important | important
        by_tag[required] = _Rule(specificity, self._count, values, important)

    def matching(self, tag: str, attr: dict[str, str]) -> list[tuple[dict[str, str], frozenset[str]]]:
        """Declarations that apply to the element, lowest precedence first."""
        keys = {tag} | {"." + c.lower() for c in attr.get("class", "").split()}
        if attr.get("id"):
            keys.add("#" + attr["id"].strip().lower())
        found: list[_Rule] = []
        for key in keys:
            by_tag = self._rules.get(key)
            if by_tag:
                found.extend(rule for required, rule in by_tag.items() if required in (None, tag))
        found.sort(key=lambda rule: (rule.specificity, rule.order))
        return [(rule.values, rule.important) for rule in found]


@dataclass(frozen=True)
class _Rule:
    specificity: int
    order: int
    values: dict[str, str]
    important: frozenset[str]


def _top_level_rules(css: str) -> list[tuple[str, str]]:
    """``(selectors, declarations)`` of rules that are not inside an at-block."""
    css = _CSS_COMMENT.sub(" ", css)
    rules: list[tuple[str, str]] = []
    stack: list[tuple[bool, str, int]] = []  # (is a style rule, selectors, body start)
    start = 0
    for match in re.finditer(r"[{}]", css):
        pos = match.start()
        if match.group() == "{":
            prelude = css[start:pos].rsplit(";", 1)[-1].strip()
            is_rule = not stack and not prelude.startswith("@")
            stack.append((is_rule, prelude, pos + 1))
        elif stack:
            is_rule, prelude, body_start = stack.pop()
            if is_rule:
                rules.append((prelude, css[body_start:pos]))
        start = pos + 1
    return rules


def _is_zero(value: str | None) -> bool:
    return value is not None and bool(_ZERO.match(value.replace(" ", "")))


@dataclass
class _Element:
    tag: str
    skip: bool  # content never rendered (<style>, <head>, ...)
    hides: bool  # hides its whole subtree, no descendant can undo it
    invisible: bool  # visibility:hidden, inherited but overridable
    zero_font: bool  # font-size:0, inherited but overridable
    link_index: int | None = None  # index into links for <a href>


@dataclass
class _OpenLink:
    url: str
    hidden: bool
    base_hides: int  # hiding depth at the <a>, to collect text of hidden links
    text: list[str] = field(default_factory=list)  # text relative to the link's own hiding
    visible: list[str] = field(default_factory=list)  # what was actually rendered
    start: int | None = None
    has_image: bool = False


class _Renderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._stack: list[_Element] = []
        self._open_count: dict[str, int] = {}
        self._hides = 0
        self._skips = 0
        self._out: list[str] = []
        self._len = 0
        self._pending = ""  # separator owed before the next visible text
        self._links: list[_OpenLink | LinkSpan] = []
        self._link: _OpenLink | None = None
        self._link_slot = -1
        self._eof = False
        self._sheet = _StyleSheet()

    # -- hardening of html.parser ------------------------------------------
    # At EOF an unterminated tag/comment makes html.parser emit it as text up
    # to the next "<" and re-scan from there: quadratic in the input, and it
    # shows text a browser would swallow. Browsers drop everything after an
    # unterminated construct, so do that.

    def _at_eof(self, result: int) -> int:
        return len(self.rawdata) if result < 0 and self._eof else result

    def parse_starttag(self, i: int) -> int:
        return self._at_eof(super().parse_starttag(i))

    def parse_endtag(self, i: int) -> int:
        return self._at_eof(super().parse_endtag(i))

    def parse_comment(self, i: int, report: bool = True) -> int:
        return self._at_eof(super().parse_comment(i, report))

    def parse_pi(self, i: int) -> int:
        return self._at_eof(super().parse_pi(i))

    def parse_html_declaration(self, i: int) -> int:
        return self._at_eof(super().parse_html_declaration(i))

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        # HTML has no marked sections: "<![CDATA[" and Outlook's "<![if ...]>"
        # are bogus comments up to the next ">" (the stdlib asserts instead).
        return self.parse_bogus_comment(i, report)

    def finish(self) -> None:
        self._eof = True
        self.close()

    def close_all(self) -> None:
        while self._stack:
            self._pop()

    # -- output -------------------------------------------------------------

    def _visible(self) -> bool:
        if self._hides or self._skips:
            return False
        if self._stack:
            top = self._stack[-1]
            return not (top.invisible or top.zero_font)
        return True

    def _break(self, sep: str) -> None:
        if sep == "\n" or not self._pending:
            self._pending = sep

    def _emit(self, data: str) -> None:
        text = _WS.sub(" ", data.translate(_INVISIBLE))
        if not text:
            return
        if text[0] == " ":
            self._break(" ")
        core = text.strip(" ")
        if core:
            link = self._link
            if self._pending and self._len:
                self._out.append(self._pending)
                self._len += len(self._pending)
                if link is not None and link.start is not None:
                    link.visible.append(" ")
            self._pending = ""
            if link is not None:
                if link.start is None:
                    link.start = self._len
                link.visible.append(core)
            self._out.append(core)
            self._len += len(core)
        if text[-1] == " ":
            self._break(" ")

    # -- tree ---------------------------------------------------------------

    def _push(self, element: _Element) -> None:
        self._stack.append(element)
        self._open_count[element.tag] = self._open_count.get(element.tag, 0) + 1
        self._hides += element.hides
        self._skips += element.skip

    def _pop(self) -> _Element:
        element = self._stack.pop()
        self._open_count[element.tag] -= 1
        self._hides -= element.hides
        self._skips -= element.skip
        if element.link_index is not None:
            self._close_link()
        if element.tag in _BLOCK:
            self._break("\n")
        elif element.tag in _CELL:
            self._break(" ")
        return element

    def _close(self, tag: str) -> None:
        # O(1) when the tag is not open, so stray end tags cannot go quadratic.
        if self._open_count.get(tag):
            while self._pop().tag != tag:
                pass

    def _close_implied(self, tag: str) -> None:
        if tag in _P_CLOSERS and self._open_count.get("p"):
            self._close_in_scope(frozenset({"p"}), _SCOPE)
        rule = _IMPLIED_END.get(tag)
        if rule is not None:
            self._close_in_scope(*rule)

    def _close_in_scope(self, closes: frozenset[str], stops: frozenset[str]) -> None:
        if not any(self._open_count.get(t) for t in closes):
            return
        for index in range(len(self._stack) - 1, -1, -1):
            name = self._stack[index].tag
            if name in closes:
                while len(self._stack) > index:
                    self._pop()
                return
            if name in stops:
                return

    def _leave_head(self) -> None:
        self._close("head")

    def _element(self, tag: str, attrs: list[tuple[str, str | None]]) -> _Element:
        attr = {name.lower(): (value or "") for name, value in attrs}
        inline = _parse_declarations(attr.get("style", ""))
        css = _cascade([*self._sheet.matching(tag, attr), inline]) if self._sheet else inline[0]
        parent = self._stack[-1] if self._stack else None
        display = css.get("display")
        hides = (
            display == "none"
            or ("hidden" in attr and display in (None, "none"))
            or _is_zero(css.get("opacity"))
            or (
                css.get("overflow") == "hidden"
                and (_is_zero(css.get("max-height")) or _is_zero(css.get("height")))
            )
        )
        visibility = css.get("visibility")
        if visibility is None:
            invisible = parent.invisible if parent else False
        else:
            invisible = visibility in ("hidden", "collapse")
        font_size = css.get("font-size")
        zero_font = _is_zero(font_size) if font_size is not None else bool(parent and parent.zero_font)
        return _Element(tag, tag in _SKIP, hides, invisible, zero_font)

    # -- HTMLParser callbacks -----------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body" or (self._open_count.get("head") and tag not in _HEAD_CONTENT):
            self._leave_head()
        self._close_implied(tag)
        if tag == "br":
            self._break("\n")
            return
        if tag == "img" and self._link is not None and self._visible() and self._shows_image(attrs):
            self._link.has_image = True
        if tag in _BLOCK:
            self._break("\n")
        elif tag in _CELL:
            self._break(" ")
        if tag in _VOID:
            return
        element = self._element(tag, attrs)
        self._push(element)
        if tag == "a":
            href = next((v or "" for k, v in attrs if k.lower() == "href"), None)
            if href is not None:
                self._open_link(element, href)

    def _shows_image(self, attrs: list[tuple[str, str | None]]) -> bool:
        # A hidden or 1x1 image (a tracking pixel) is no button anyone sees.
        image = self._element("img", attrs)
        if image.hides or image.invisible:
            return False
        sizes = {k.lower(): (v or "").strip().lower() for k, v in attrs if k.lower() in ("width", "height")}
        return not any(v in ("0", "1", "0px", "1px") for v in sizes.values())

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # Browsers ignore "/>" on non-void HTML elements: <div style="display:
        # none"/> still hides everything up to </div>.
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "br":  # </br> is a <br> in browsers
            self._break("\n")
            return
        if tag == "p" and not self._open_count.get("p"):
            self._break("\n")
            return
        self._close(tag)

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1].tag == "style":
            # Applies to the elements after it; <style> blocks come first in mail.
            self._sheet.add(data)
            return
        if self._stack and self._stack[-1].tag == "head":
            if not data.strip():
                return
            # Text directly in <head> starts the body, as browsers do.
            self._leave_head()
        if self._skips:
            return
        if self._link is not None and self._hides == self._link.base_hides:
            self._link.text.append(data)
        if self._visible():
            self._emit(data)

    # -- links --------------------------------------------------------------

    def _open_link(self, element: _Element, href: str) -> None:
        url = "".join(ch for ch in href.strip() if ch not in "\t\r\n")
        hidden = self._hides > 0 or self._skips > 0 or element.invisible or element.zero_font
        self._link = _OpenLink(url, hidden, self._hides)
        self._link_slot = len(self._links)
        self._links.append(self._link)
        element.link_index = self._link_slot

    def _close_link(self) -> None:
        link = self._link
        if link is None:
            return
        self._link = None
        if link.start is not None:
            # Something inside was rendered, so the link is visible even if
            # the <a> itself was invisible (a child reset visibility/font-size).
            start, end, hidden = link.start, self._len, False
            text = "".join(link.visible)
        else:
            start = end = self._len
            hidden = link.hidden
            text = " ".join(_WS.sub(" ", "".join(link.text).translate(_INVISIBLE)).split())
        has_image = link.has_image and not hidden
        self._links[self._link_slot] = LinkSpan(Link(link.url, text, hidden), start, end, has_image)

    def result(self) -> RenderedHtml:
        spans = tuple(s for s in self._links if isinstance(s, LinkSpan))
        return RenderedHtml("".join(self._out), spans)


def _cap(html: str, max_chars: int) -> str:
    if len(html) <= max_chars:
        return html
    # Keep the footer (unsubscribe, imprint) as well as the top.
    half = max_chars // 2
    return html[:half] + "\n" + html[len(html) - (max_chars - half) :]


# Several policies render the same body part of one message; the result is
# immutable, so a small cache saves re-parsing it.
@lru_cache(maxsize=8)
def render(html: str, *, max_chars: int = DEFAULT_MAX_HTML_CHARS) -> RenderedHtml:
    """Visible text of ``html`` and its links with offsets. Never raises."""
    renderer = _Renderer()
    try:
        renderer.feed(_cap(html, max_chars))
        renderer.finish()
    except Exception:  # keep what was rendered; garbage must not crash a policy
        pass
    renderer.close_all()
    return renderer.result()


def visible_text(html: str) -> str:
    """HTML reduced to the text a recipient sees, whitespace collapsed.

    Block elements and <br> become line breaks, table cells spaces; entities
    are decoded and &nbsp; becomes a space; head, style, script, comments,
    hidden subtrees and image alt text are left out.
    """
    return render(html).text


def links(html: str) -> list[Link]:
    """Every ``<a href>`` in document order, with visible text and hidden flag."""
    return [span.link for span in render(html).links]
