"""The report-abuse page: a pasted mail ID or an uploaded .eml goes through the same complaint
pipeline as abuse@ mail (feedback intake): recorded, recipient suppressed for that customer,
counted; a forged or damaged ID is said to be not ours and nothing is done."""

from __future__ import annotations

import uuid

import pytest

from gateway.core.message import header_values
from tests.integration.test_http_support import check_page, rcpt_reply, send, start

POLICIES = [{"name": "customer-active", "mode": "enforce"}, {"name": "suppression", "mode": "enforce"}]


@pytest.fixture
def setup(gateway, scripted_mta, tmp_path):
    gw, mta, http, _ = start(gateway, scripted_mta, tmp_path, policies=POLICIES)
    data = send(gw, mta, "anna@example.org")
    [mail_id] = header_values(data, "X-Mailing-ID")
    return gw, mta, http, mail_id, data


def multipart(fields: dict[str, tuple[str | None, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for name, (filename, value) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (
            (
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                + ("Content-Type: message/rfc822\r\n" if filename else "")
                + "\r\n"
            ).encode()
            + value
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def report(http, lang="en", **fields):
    body, ctype = multipart(fields)
    return http.request("POST", f"/report?lang={lang}", body, {"Content-Type": ctype})


def test_form_is_plain_and_labelled(setup):
    _, _, http, _, _ = setup
    page = http.get("/report", **{"Accept-Language": "de"})
    assert page.status == 200
    check_page(page, "de")
    assert 'enctype="multipart/form-data"' in page.text
    assert '<label for="mail_id">Mail-ID</label>' in page.text
    assert "X-Mailing-ID" in page.text
    english = http.get("/report?lang=en")
    check_page(english, "en")
    assert "Report an unwanted email" in english.text


def test_pasted_genuine_id_is_a_complaint(setup):
    gw, _, http, mail_id, _ = setup
    reply = report(http, mail_id=(None, f"  X-Mailing-ID: {mail_id}\n".encode()))
    assert reply.status == 200, reply.text
    check_page(reply, "en")
    assert "Thank you for your report" in reply.text and mail_id in reply.text
    assert "Müller &amp; &lt;Söhne&gt; GmbH" in reply.text
    assert "will get no more emails from this sender" in reply.text
    customer = gw.store.get_customer("acme")
    [event] = gw.store.feedback_for_mail_id(mail_id)
    assert (event.kind, event.source, event.mail_id_status, event.acted) == (
        "complaint",
        "report-page",
        "genuine",
        True,
    )
    assert f"#{event.id}" in reply.text
    entry = gw.store.find_suppression(customer.id, "anna@example.org")
    assert (entry.reason, entry.mail_id) == ("complaint", mail_id)
    assert rcpt_reply(gw, "anna@example.org")[0] == 550
    assert gw.store.count_complaints(customer.id, 0) == 1
    # The same mail reported again is not counted twice.
    again = report(http, mail_id=(None, mail_id.encode()))
    assert again.status == 200 and "already been reported" in again.text
    assert gw.store.count_complaints(customer.id, 0) == 1


def test_id_typed_in_capitals_is_found(setup):
    gw, _, http, mail_id, _ = setup
    reply = report(http, mail_id=(None, mail_id.upper().encode()))
    assert reply.status == 200 and mail_id in reply.text


def test_uploaded_eml_is_a_complaint(setup):
    gw, _, http, mail_id, data = setup
    reply = report(http, lang="de", eml=("spam.eml", data))
    assert reply.status == 200
    check_page(reply, "de")
    assert "Vielen Dank für Ihre Meldung" in reply.text
    assert gw.store.feedback_for_mail_id(mail_id)[0].kind == "complaint"
    assert gw.store.find_suppression(gw.store.get_customer("acme").id, "anna@example.org")


def test_forged_and_altered_ids_are_not_ours(setup, tmp_path):
    from gateway.mailid import MailIdCodec

    gw, _, http, mail_id, _ = setup
    other = MailIdCodec.from_key_file(tmp_path / "other.key")
    forged = other.finalize(other.new_stem(gw.store.get_customer("acme").id), 0, "anna@example.org")
    reply = report(http, mail_id=(None, forged.encode()))
    assert reply.status == 422
    assert "This mail ID is not ours" in reply.text and "signature does not match" in reply.text
    check_page(reply, "en")
    altered = mail_id[:20] + ("a" if mail_id[20] != "a" else "b") + mail_id[21:]
    reply = report(http, lang="de", mail_id=(None, altered.encode()))
    assert reply.status == 422 and "unvollständig oder vertippt" in reply.text
    nothing = report(http, mail_id=(None, b"<script>alert(1)</script> no id here"))
    assert nothing.status == 422 and "No mail ID of ours found" in nothing.text
    assert "<script>alert" not in nothing.text
    assert gw.store.list_suppressions() == []
    assert {e.mail_id_status for e in gw.store.list_feedback_events()} == {"forged", "altered", "none"}


def test_empty_form_and_rate_limit(gateway, scripted_mta, tmp_path):
    gw, _, http, _ = start(
        gateway, scripted_mta, tmp_path, policies=POLICIES, http={"report_limit_per_hour": 2}
    )
    empty = report(http, mail_id=(None, b"  "))
    assert empty.status == 400 and 'role="alert"' in empty.text
    assert 'aria-describedby="mail_id_hint report-error"' in empty.text
    for _ in range(2):
        assert report(http, mail_id=(None, b"nothing")).status == 422
    limited = report(http, mail_id=(None, b"<b>nothing</b>"))
    assert limited.status == 429 and "&lt;b&gt;nothing&lt;/b&gt;" in limited.text
