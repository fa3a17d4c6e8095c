"""Shared helpers for the test_http_* and test_consent_* integration modules (no tests here).

`start(...)` runs the real gateway (`RunningGateway`) with a submission and an http listener, a
ScriptedMTA downstream, customer acme with a verified domain, a confirmed campaign and an
rsa-sha256 DKIM key. `Http` talks to the http listener with the stdlib, never following
redirects, the way a mailbox provider's one-click POST does.
"""

from __future__ import annotations

import html
import json
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin

from gateway.core.message import header_values
from gateway.dkim import keygen
from tests.support.gateway import add_customer

PUBLIC = "https://gw.esp.example"
SENDER = "news@customer.example"
IMPRINT = {
    "company": "Müller & <Söhne>",
    "legal_form": "GmbH",
    "street": "Königstraße 12",
    "postcode": "70173",
    "city": "Stuttgart",
    "email": "info@customer.example",
}


def message(rcpt: str, *, extra_headers: str = "", body: str | None = None) -> bytes:
    text = (
        body
        if body is not None
        else (
            "Hello,\r\n\r\nour autumn offers are here.\r\n\r\n"
            "To unsubscribe, click https://customer.example/unsubscribe?u=1\r\n"
        )
    )
    return (
        "From: Shop News <news@customer.example>\r\n"
        f"To: {rcpt}\r\n"
        "Subject: Autumn offers\r\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@customer.example>\r\n"
        "X-Campaign-ID: autumn-2026\r\n"
        f"{extra_headers}"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n" + text
    ).encode()


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Http:
    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(_NoRedirect())

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return Reply(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, err.headers, err.read())

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers=headers)

    def post_form(self, path: str, body: bytes | str, **headers: str) -> Reply:
        data = body.encode() if isinstance(body, str) else body
        return self.request(
            "POST", path, data, {"Content-Type": "application/x-www-form-urlencoded", **headers}
        )

    def api(self, method: str, path: str, key: str | None, body: Any = None) -> Reply:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        return self.request(method, path, data, headers)


def http_base(gw: Any) -> str:
    runner = gw.server.http_runners[0]
    port = runner.addresses[0][1]
    return f"http://127.0.0.1:{port}"


def local_path(url: str) -> str:
    assert url.startswith(PUBLIC + "/"), url
    return url[len(PUBLIC) :]


def start(
    gateway: Any,
    scripted_mta: Any,
    tmp_path: Any,
    *,
    policies: list[dict[str, Any]],
    managed: bool = False,
    http: dict[str, Any] | None = None,
) -> tuple[Any, Any, Http, dict[str, str]]:
    """(gateway, downstream, http client, DKIM DNS records)."""
    _, txt = keygen("customer.example", "s1", "rsa-sha256", tmp_path / "dkim")
    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"cert": str(tmp_path / "tls/cert.pem"), "key": str(tmp_path / "tls/key.pem")},
            },
            {"kind": "http", "address": "127.0.0.1", "port": 0},
        ],
        dkim={"keys_dir": str(tmp_path / "dkim"), "missing_key": "tempfail"},
        http={
            "public_url": PUBLIC,
            "token_key_file": str(tmp_path / "http.key"),
            "api_keys_file": str(tmp_path / "api-keys"),
            **(http or {}),
        },
        policies=policies,
    )
    add_customer(gw.store)
    gw.store.set_imprint("acme", IMPRINT)
    if managed:
        gw.store.set_unsubscribe("acme", None, managed=True)
    gw.store.confirm_campaign("acme", "autumn-2026", by="jane@customer.example")
    return gw, mta, Http(http_base(gw)), {"s1._domainkey.customer.example": txt}


def send(gw: Any, mta: Any, rcpt: str, raw: bytes | None = None) -> bytes:
    before = len(mta.received)
    with gw.client() as smtp:
        assert smtp.sendmail(SENDER, [rcpt], raw or message(rcpt)) == {}
    assert len(mta.received) == before + 1
    return mta.received[-1][2]


def rcpt_reply(gw: Any, rcpt: str) -> tuple[int, bytes]:
    with gw.client() as smtp:
        assert smtp.mail(SENDER)[0] == 250
        return smtp.rcpt(rcpt)


def page_form(page_text: str, page_path: str) -> tuple[str, dict[str, str]]:
    """(action as a path, hidden fields) of the one POST form on a page."""
    form = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', page_text, re.S)
    assert form, page_text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(2)))
    return urljoin(page_path, html.unescape(form.group(1))), {k: html.unescape(v) for k, v in fields.items()}


def press_button(http: Http, page_path: str, **headers: str) -> Reply:
    """What a browser does on our page: load it, post its form from the page's own origin."""
    page = http.get(page_path)
    assert page.status == 200, page.text
    action, fields = page_form(page.text, page_path)
    return http.post_form(action, urlencode(fields), **{"Origin": http.base, **headers})


def unsubscribe_url_of(data: bytes) -> str:
    [value] = header_values(data, "List-Unsubscribe")
    match = re.fullmatch(r"<(https://[^>]+)>", value.strip())
    assert match, value
    return match.group(1)


def check_page(reply: Reply, lang: str) -> None:
    """What every page promises: lang, viewport, no script, escaped, CSP, no cookie."""
    text = reply.text
    assert reply.headers.get("Content-Type", "").startswith("text/html")
    assert f'<html lang="{lang}">' in text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert "<script" not in text.lower()
    assert "Set-Cookie" not in reply.headers
    assert "Location" not in reply.headers
    csp = reply.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    # same-origin, not no-referrer: under no-referrer our own form posts carry Origin: null.
    assert reply.headers["Referrer-Policy"] == "same-origin"
    assert '<meta name="referrer" content="same-origin">' in text
    # Every form field has a label.
    for field_id in re.findall(r'<(?:input|textarea)[^>]*\bid="([^"]+)"', text):
        assert f'<label for="{field_id}">' in text, field_id
