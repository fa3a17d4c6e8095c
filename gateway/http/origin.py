"""Did a form POST come from one of our own pages (or did another site make the browser send
it)? The double-opt-in confirmation must be the recipient pressing our button: a sign-up page
that posts /c/TOKEN itself (a hidden form, cross-origin) would confirm on the subscriber's
behalf with the subscriber's own IP and browser as "evidence".

What the browser tells us, in this order (the first that is there decides):

| header                       | ours when                                  | answer          |
|------------------------------|--------------------------------------------|-----------------|
| Origin (not "null")          | http.public_url's origin, or the Host the  | origin          |
|                              | request was sent to                        |                 |
| Sec-Fetch-Site               | "same-origin"                              | sec-fetch-site  |
| Origin: null                 | never (what a page with no-referrer or a   | refused         |
|                              | sandboxed frame sends: it hides the site)  |                 |
| Referer                      | its origin is ours, as for Origin          | referer         |
| none of them                 | see below                                  | unverified      |

Browsers set Origin and Sec-Fetch-Site themselves; a page cannot choose them. Every current
browser sends Origin on a POST (Fetch standard; "null" at worst), so a POST with none of these
headers is not a browser submitting another site's form: it is a script, an old browser or a
proxy that strips headers. Such a request is accepted when it carries a valid page nonce and is
recorded as "unverified": refusing it would stop no one (whoever runs a script can send any
Origin), only old browsers, and the evidence says plainly that the origin was not seen.

Our pages are served with `Referrer-Policy: same-origin`: under `no-referrer` browsers send
`Origin: null` even on our own form posts.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web


@dataclass(frozen=True)
class PageOrigin:
    ok: bool
    # ok: origin | sec-fetch-site | referer | unverified;
    # refused: cross-origin | cross-site | opaque-origin
    how: str


def _origin_of(url: str) -> tuple[str, str] | None:
    """(scheme, host[:port]) of a URL or an Origin value, lower-cased; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return parts.scheme, host if port in (None, default) else f"{host}:{port}"


def _ours(value: str, request: web.Request, public_url: str | None) -> bool:
    origin = _origin_of(value)
    if origin is None:
        return False
    if public_url and origin == _origin_of(public_url):
        return True
    # The host the browser sent this very request to (the listener reached directly, or a
    # proxy that passes Host on): a page there is one of ours.
    host = (request.headers.get("Host") or "").strip().lower()
    return bool(host) and origin[1] == host.removesuffix(":443" if origin[0] == "https" else ":80")


def page_origin(request: web.Request, public_url: str | None) -> PageOrigin:
    origin = request.headers.get("Origin")
    if origin is not None and origin.strip().lower() != "null":
        return (
            PageOrigin(True, "origin")
            if _ours(origin, request, public_url)
            else PageOrigin(False, "cross-origin")
        )
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        same = fetch_site.strip().lower() == "same-origin"
        return PageOrigin(same, "sec-fetch-site" if same else "cross-site")
    if origin is not None:
        return PageOrigin(False, "opaque-origin")
    referer = request.headers.get("Referer")
    if referer is not None:
        return (
            PageOrigin(True, "referer")
            if _ours(referer, request, public_url)
            else PageOrigin(False, "cross-origin")
        )
    return PageOrigin(True, "unverified")
