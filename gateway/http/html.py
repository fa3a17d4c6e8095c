"""The look of the recipients' pages: one plain, accessible layout in German and English.

Plain HTML and one inline stylesheet: no JavaScript, no external resources, no cookies, a
`lang` attribute, a viewport for phones, labels on every field, visible focus, and colours with
a contrast of at least 7:1 (text) and 4.5:1 (buttons, links). Everything dynamic is escaped
with `e()`. The responses carry a Content-Security-Policy that allows exactly this stylesheet
(by hash), form posts to this origin and nothing else, and `Referrer-Policy: same-origin` so
the token in the URL never leaks to another site (not `no-referrer`: under it browsers send
`Origin: null` on our own form posts, and the confirmation checks that they come from us).
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

from aiohttp import web

LANGUAGES = ("en", "de")
LANGUAGE_NAMES = {"en": "English", "de": "Deutsch"}

CSS = (
    "html{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;"
    "font-size:112.5%;line-height:1.5;color:#1a1a1a;background:#ffffff}"
    "body{margin:0;padding:1rem}"
    "main,footer{max-width:40rem;margin:0 auto}"
    "h1{font-size:1.6rem;line-height:1.25;margin:1rem 0}"
    "a{color:#0b57d0}"
    "a:focus-visible,button:focus-visible,input:focus-visible,textarea:focus-visible"
    "{outline:3px solid #1a1a1a;outline-offset:2px}"
    "button{font:inherit;font-weight:600;color:#ffffff;background:#0b57d0;border:2px solid #0b57d0;"
    "border-radius:.3rem;padding:.6rem 1.2rem;cursor:pointer;min-height:44px}"
    "button:hover{background:#0842a0;border-color:#0842a0}"
    "label{display:block;font-weight:600;margin:1rem 0 .25rem}"
    "input[type=text],textarea{font:inherit;width:100%;box-sizing:border-box;padding:.5rem;"
    "border:2px solid #555;border-radius:.3rem;color:#1a1a1a;background:#ffffff}"
    "input[type=file]{font:inherit;max-width:100%}"
    ".hint{color:#444444;font-size:.95rem;margin:.25rem 0}"
    ".ok{border-left:.4rem solid #146c2e;padding-left:.8rem}"
    ".problem{border-left:.4rem solid #a50e0e;padding-left:.8rem}"
    ".error{color:#a50e0e;font-weight:600}"
    "code{font-size:.95em;word-break:break-all}"
    "form{margin:1.5rem 0}"
    "footer{margin-top:2.5rem;padding-top:1rem;border-top:1px solid #767676;font-size:.95rem}"
)
CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{CSS_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}


def e(value: Any) -> str:
    """Escape for HTML text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def language(request: web.Request, default: str = "en") -> str:
    """?lang= wins, then the best Accept-Language match, then the configured default."""
    asked = request.query.get("lang", "").strip().lower()[:2]
    if asked in LANGUAGES:
        return asked
    best: tuple[float, int, str] | None = None
    header = request.headers.get("Accept-Language", "")[:500]
    for position, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if primary in LANGUAGES and quality > 0:
            candidate = (-quality, position, primary)
            if best is None or candidate < best:
                best = candidate
    return best[2] if best else (default if default in LANGUAGES else "en")


def here(request: web.Request) -> str:
    """The last path segment: links and form actions are relative, so the pages also work
    behind a proxy that serves them under a path prefix (public_url https://host/prefix)."""
    return request.path.rsplit("/", 1)[-1]


def page(
    request: web.Request, lang: str, title: str, body: str, *, status: int = 200, path: str | None = None
) -> web.Response:
    """A whole page; `body` is HTML the caller built with e(). `path`: the relative target of
    the language links (default: this page)."""
    target = path if path is not None else here(request)
    others = " · ".join(
        f'<a href="{e(target)}?lang={code}" lang="{code}" hreflang="{code}"'
        + (' aria-current="true"' if code == lang else "")
        + f">{LANGUAGE_NAMES[code]}</a>"
        for code in LANGUAGES
    )
    nav_label = "Sprache" if lang == "de" else "Language"
    text = (
        "<!DOCTYPE html>\n"
        f'<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        '<meta name="referrer" content="same-origin">\n'
        f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<main>\n{body}\n</main>\n"
        f'<footer><nav aria-label="{nav_label}">{others}</nav></footer>\n'
        "</body>\n</html>\n"
    )
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS
    )
