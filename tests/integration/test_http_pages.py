"""What every recipient page promises (language, accessibility, security headers) and what the
http listener keeps doing (/metrics, /healthz)."""

from __future__ import annotations

import re

import pytest

from gateway.http.html import CSS, SECURITY_HEADERS
from gateway.urltokens import UNSUBSCRIBE, signer_for
from tests.integration.test_http_support import check_page, start


@pytest.fixture
def setup(gateway, scripted_mta, tmp_path):
    gw, _, http, _ = start(
        gateway,
        scripted_mta,
        tmp_path,
        policies=[{"name": "customer-active", "mode": "enforce"}],
        http={"default_language": "de"},
    )
    token = signer_for(tmp_path / "http.key").make(
        UNSUBSCRIBE, gw.store.get_customer("acme").id, "anna@example.org"
    )
    return gw, http, token


@pytest.mark.parametrize(
    "header, query, lang",
    [
        (None, "", "de"),  # the configured default
        ("en-US,en;q=0.9", "", "en"),
        ("fr-FR, en;q=0.3, de;q=0.7", "", "de"),  # the best of what we have
        ("fr", "", "de"),
        ("de", "?lang=en", "en"),  # ?lang= wins
        ("en", "?lang=xx", "en"),
    ],
)
def test_language_negotiation(setup, header, query, lang):
    _, http, token = setup
    headers = {"Accept-Language": header} if header else {}
    page = http.get(f"/u/{token}{query}", **headers)
    assert page.status == 200
    check_page(page, lang)
    nav = re.search(r"<nav[^>]*>(.*?)</nav>", page.text).group(1)
    assert f'href="{token}?lang=de"' in nav and f'href="{token}?lang=en"' in nav


def test_invalid_link_page(setup):
    _, http, _ = setup
    page = http.get("/u/not-a-token?lang=de")
    assert page.status == 404 and "Dieser Link ist ungültig" in page.text
    check_page(page, "de")


def test_security_headers_and_stylesheet_hash(setup):
    _, http, token = setup
    page = http.get(f"/u/{token}")
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert f"<style>{CSS}</style>" in page.text
    assert "Cache-Control" in page.headers and "no-store" in page.headers["Cache-Control"]


def _luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def _contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize(
    "fg, bg, minimum",
    [
        ("#1a1a1a", "#ffffff", 7.0),  # text
        ("#444444", "#ffffff", 7.0),  # hints
        ("#a50e0e", "#ffffff", 7.0),  # errors
        ("#ffffff", "#0b57d0", 4.5),  # button
        ("#ffffff", "#0842a0", 4.5),  # button hover
        ("#0b57d0", "#ffffff", 4.5),  # links
    ],
)
def test_colours_have_sufficient_contrast(fg, bg, minimum):
    assert fg in CSS and bg in CSS
    assert _contrast(fg, bg) >= minimum


def page_actions(http, page: str, result: str) -> float:
    """gateway_http_page_actions_total{page, result} as /metrics shows it (0 before the first)."""
    metrics = http.get("/metrics")
    assert metrics.status == 200
    match = re.search(
        rf'^gateway_http_page_actions_total\{{page="{page}",result="{result}"\}} '
        r"(\S+)$",
        metrics.text,
        re.M,
    )
    return float(match.group(1)) if match else 0.0


def test_metrics_and_health_still_served(setup):
    _, http, token = setup
    before = {result: page_actions(http, "unsubscribe", result) for result in ("added", "exists", "invalid")}
    assert http.get(f"/u/{token}").status == 200  # showing the page counts nothing
    assert http.post_form(f"/u/{token}", "List-Unsubscribe=One-Click").status == 200
    assert http.post_form(f"/u/{token}", "List-Unsubscribe=One-Click").status == 200
    assert http.get("/u/not-a-token").status == 404
    moved = {result: page_actions(http, "unsubscribe", result) - before[result] for result in before}
    assert moved == {"added": 1, "exists": 1, "invalid": 1}
    metrics = http.get("/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain")
    # Store and downstream (the scripted MTA) are both up: healthy, and nothing less.
    health = http.get("/healthz")
    assert health.status == 200
    assert health.json() == {"status": "ok", "checks": {"store": "ok", "downstream": "ok"}}
