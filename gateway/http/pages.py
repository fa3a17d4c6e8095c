"""The recipients' pages: one-click unsubscribe (RFC 8058), DOI confirmation, report abuse.

| method | path          | what it does                                                        |
|--------|---------------|---------------------------------------------------------------------|
| GET    | /u/{token}    | page: "stop mail from SENDER to ADDRESS?" with a button; changes nothing |
| POST   | /u/{token}    | body List-Unsubscribe=One-Click: suppress at once (per customer),   |
|        |               | revoke the consent record; 200, no redirect, no cookie, idempotent  |
| GET    | /c/{token}    | page: "confirm your subscription" with a button; changes nothing    |
| POST   | /c/{token}    | confirm: records time, IP and user agent as DOI evidence; only from |
|        |               | our page (same origin + page nonce), else 403 and nothing recorded  |
| GET    | /report       | form: paste a mail ID or upload the .eml                            |
| POST   | /report       | the complaint pipeline (feedback intake, as for abuse@ mail);       |
|        |               | report_limit_per_hour per client address (IPv6: per /64)            |

GET never changes anything: link scanners and previews fetch links. Tokens are checked with
`gateway.urltokens`; a token that does not verify gets a plain "this link is not valid" (404)
and nothing else.

The forms of the confirmation and unsubscribe pages carry a page nonce (an HMAC of the token
and the time, `TokenSigner.page_nonce`). A confirmation counts only when the POST comes from our
page: same origin (`gateway.http.origin`) and a nonce of this token's page, less than a day
old; the consent event records how the origin was seen. The one-click unsubscribe needs
neither: RFC 8058 posts come from mail providers' servers, cross-origin by design, and
unsubscribing on someone's behalf does them no harm; only the page's own button is recorded as
"http:page", when it passes the same check.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from aiohttp import BodyPartReader, web
from prometheus_client import Counter

from gateway import metrics
from gateway.http.clientaddr import client_ip, report_limit_key
from gateway.http.html import e, here, language, page
from gateway.http.origin import PageOrigin, page_origin
from gateway.logging import get_logger
from gateway.urltokens import CONFIRM, UNSUBSCRIBE, Claims, TokenError, signer_for

log = get_logger()
DAY = 86400.0
HOUR = 3600.0
REPORT_LIMIT_SCOPE = "http-report"
_ID_ANY_CASE = re.compile(r"(?i)(?<![a-z0-9])[e-h][a-z2-7]{47}(?![a-z0-9])")

PAGE_ACTIONS = Counter(
    "gateway_http_page_actions_total", "What the recipients' pages did", ["page", "result"]
)

T: dict[str, dict[str, str]] = {
    "en": {
        "invalid_title": "This link is not valid",
        "invalid_text": "The link may have been cut off or changed. Please open the complete "
        "link from the email again, or contact the sender.",
        "unsub_title": "Unsubscribe",
        "unsub_question": "Do you want to stop receiving emails from {sender} at {address}?",
        "unsub_button": "Unsubscribe",
        "unsub_hint": "One click is enough. Nothing happens until you press the button.",
        "unsub_done_title": "You are unsubscribed",
        "unsub_done": "{sender} will send no more emails to {address}. This takes effect immediately.",
        "unsub_already": "{address} is already unsubscribed from {sender}.",
        "unsub_bad_request": "This request did not ask to unsubscribe. Please use the button "
        "on the unsubscribe page.",
        "confirm_title": "Confirm your subscription",
        "confirm_question": "Please confirm that you want to receive emails from {sender} at {address}.",
        "confirm_button": "Confirm subscription",
        "confirm_hint": "If you did not sign up, simply ignore this page: you will not "
        "receive any newsletters.",
        "confirm_done_title": "Thank you",
        "confirm_done": "Your subscription to {sender} for {address} is confirmed.",
        "confirm_already": "Your subscription to {sender} for {address} is already confirmed.",
        "confirm_revoked": "This subscription was cancelled on {date}. To receive emails "
        "again, please subscribe again on the sender's website.",
        "confirm_superseded": "This confirmation link belongs to an earlier sign-up. Please "
        "use the link in the newest confirmation email.",
        "confirm_unknown": "No sign-up was found for this link.",
        "confirm_refused_title": "Please confirm on the confirmation page",
        "confirm_refused": "This confirmation did not come from our confirmation page, so "
        "nothing was recorded. To confirm, open the confirmation page and "
        "press the button there.",
        "confirm_open_page": "Open the confirmation page",
        "confirm_expired_title": "This confirmation link has expired",
        "confirm_expired": "Please sign up again on the sender's website; you will then "
        "receive a new confirmation email.",
        "report_title": "Report an unwanted email",
        "report_intro": "Did you receive an email sent through our service that you did not "
        "ask for? Tell us, and we will stop the sender from mailing you and "
        "check the sender.",
        "report_id_label": "Mail ID",
        "report_id_hint": "You find it in the email's headers, in the line starting with "
        "{header}: (48 letters and digits). You can also paste the whole "
        "headers.",
        "report_file_label": "Or upload the email as a file (.eml)",
        "report_file_hint": "Most mail programs can save an email as a file or show its "
        'source ("Show original", "View source").',
        "report_button": "Report email",
        "report_missing": "Please paste a mail ID or choose the email file.",
        "report_too_big": "The file is too large.",
        "report_limited": "Too many reports from your network. Please try again in an hour.",
        "report_done_title": "Thank you for your report",
        "report_done": "We recorded your complaint about the email with mail ID {mail_id}, sent by {sender}.",
        "report_suppressed": "The receiving address will get no more emails from this sender.",
        "report_duplicate": "This email had already been reported; the receiving address gets "
        "no more emails from this sender.",
        "report_reference": "Reference number: {reference}.",
        "report_forged_title": "This mail ID is not ours",
        "report_forged": "The mail ID {mail_id} was not issued by this service: its signature "
        "does not match. The email did not come through us, or the ID was "
        "made up. Nothing was done.",
        "report_altered_title": "This mail ID is incomplete or mistyped",
        "report_altered": "The mail ID {mail_id} is damaged (a character is missing or wrong). "
        "Please copy it again, or upload the email as a file.",
        "report_none_title": "No mail ID of ours found",
        "report_none": "What you sent contains no mail ID of this service, so the email was "
        "probably not sent through us. Nothing was done.",
        "report_again": "Report another email",
    },
    "de": {
        "invalid_title": "Dieser Link ist ungültig",
        "invalid_text": "Der Link wurde vielleicht abgeschnitten oder verändert. Bitte öffnen "
        "Sie den vollständigen Link aus der E-Mail erneut oder wenden Sie sich "
        "an den Absender.",
        "unsub_title": "Abmelden",
        "unsub_question": "Möchten Sie keine E-Mails von {sender} mehr an {address} erhalten?",
        "unsub_button": "Abmelden",
        "unsub_hint": "Ein Klick genügt. Erst wenn Sie die Schaltfläche drücken, geschieht etwas.",
        "unsub_done_title": "Sie sind abgemeldet",
        "unsub_done": "{sender} sendet keine E-Mails mehr an {address}. Das gilt ab sofort.",
        "unsub_already": "{address} ist bei {sender} bereits abgemeldet.",
        "unsub_bad_request": "Diese Anfrage war keine Abmeldung. Bitte nutzen Sie die "
        "Schaltfläche auf der Abmeldeseite.",
        "confirm_title": "Anmeldung bestätigen",
        "confirm_question": "Bitte bestätigen Sie, dass Sie E-Mails von {sender} an {address} "
        "erhalten möchten.",
        "confirm_button": "Anmeldung bestätigen",
        "confirm_hint": "Wenn Sie sich nicht angemeldet haben, ignorieren Sie diese Seite "
        "einfach: Sie erhalten dann keine Newsletter.",
        "confirm_done_title": "Vielen Dank",
        "confirm_done": "Ihre Anmeldung bei {sender} für {address} ist bestätigt.",
        "confirm_already": "Ihre Anmeldung bei {sender} für {address} ist bereits bestätigt.",
        "confirm_revoked": "Diese Anmeldung wurde am {date} beendet. Wenn Sie wieder E-Mails "
        "erhalten möchten, melden Sie sich bitte auf der Website des "
        "Absenders neu an.",
        "confirm_superseded": "Dieser Bestätigungslink gehört zu einer früheren Anmeldung. "
        "Bitte nutzen Sie den Link aus der neuesten Bestätigungs-E-Mail.",
        "confirm_unknown": "Zu diesem Link wurde keine Anmeldung gefunden.",
        "confirm_refused_title": "Bitte auf der Bestätigungsseite bestätigen",
        "confirm_refused": "Diese Bestätigung kam nicht von unserer Bestätigungsseite, daher "
        "wurde nichts gespeichert. Um zu bestätigen, öffnen Sie die "
        "Bestätigungsseite und drücken Sie dort die Schaltfläche.",
        "confirm_open_page": "Bestätigungsseite öffnen",
        "confirm_expired_title": "Dieser Bestätigungslink ist abgelaufen",
        "confirm_expired": "Bitte melden Sie sich auf der Website des Absenders erneut an; "
        "Sie erhalten dann eine neue Bestätigungs-E-Mail.",
        "report_title": "Unerwünschte E-Mail melden",
        "report_intro": "Sie haben über unseren Dienst eine E-Mail erhalten, die Sie nicht "
        "bestellt haben? Melden Sie sie uns: Wir sorgen dafür, dass der "
        "Absender Ihnen nicht mehr schreibt, und prüfen den Absender.",
        "report_id_label": "Mail-ID",
        "report_id_hint": "Sie steht in den Kopfzeilen der E-Mail, in der Zeile, die mit "
        "{header}: beginnt (48 Buchstaben und Ziffern). Sie können auch "
        "alle Kopfzeilen einfügen.",
        "report_file_label": "Oder laden Sie die E-Mail als Datei hoch (.eml)",
        "report_file_hint": "Die meisten E-Mail-Programme können eine E-Mail als Datei "
        'speichern oder ihren Quelltext anzeigen ("Original anzeigen", '
        '"Quelltext anzeigen").',
        "report_button": "E-Mail melden",
        "report_missing": "Bitte fügen Sie eine Mail-ID ein oder wählen Sie die E-Mail-Datei aus.",
        "report_too_big": "Die Datei ist zu groß.",
        "report_limited": "Zu viele Meldungen aus Ihrem Netz. Bitte versuchen Sie es in einer Stunde erneut.",
        "report_done_title": "Vielen Dank für Ihre Meldung",
        "report_done": "Wir haben Ihre Beschwerde über die E-Mail mit der Mail-ID {mail_id} "
        "von {sender} erfasst.",
        "report_suppressed": "Die Empfängeradresse erhält von diesem Absender keine E-Mails mehr.",
        "report_duplicate": "Diese E-Mail wurde bereits gemeldet; die Empfängeradresse erhält "
        "von diesem Absender keine E-Mails mehr.",
        "report_reference": "Vorgangsnummer: {reference}.",
        "report_forged_title": "Diese Mail-ID stammt nicht von uns",
        "report_forged": "Die Mail-ID {mail_id} wurde nicht von diesem Dienst vergeben: ihre "
        "Signatur stimmt nicht. Die E-Mail kam nicht über uns, oder die ID "
        "wurde erfunden. Es wurde nichts unternommen.",
        "report_altered_title": "Diese Mail-ID ist unvollständig oder vertippt",
        "report_altered": "Die Mail-ID {mail_id} ist beschädigt (ein Zeichen fehlt oder ist "
        "falsch). Bitte kopieren Sie sie erneut oder laden Sie die E-Mail als "
        "Datei hoch.",
        "report_none_title": "Keine Mail-ID von uns gefunden",
        "report_none": "Ihre Angaben enthalten keine Mail-ID dieses Dienstes; die E-Mail wurde "
        "also wahrscheinlich nicht über uns versandt. Es wurde nichts "
        "unternommen.",
        "report_again": "Weitere E-Mail melden",
    },
}


def t(lang: str, key: str, **values: Any) -> str:
    """A text with its values escaped (the text itself is ours)."""
    text = e(T[lang][key])
    for name, value in values.items():
        text = text.replace("{" + name + "}", value if isinstance(value, Markup) else e(value))
    return text


class Markup(str):
    """HTML built here that t() must not escape again."""


def strong(value: Any) -> Markup:
    return Markup(f"<strong>{e(value)}</strong>")


def code(value: Any) -> Markup:
    return Markup(f"<code>{e(value)}</code>")


def _date(ts: float | None, lang: str) -> str:
    if ts is None:
        return "-"
    d = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return d.strftime("%d.%m.%Y") if lang == "de" else d.strftime("%Y-%m-%d")


# -- helpers ------------------------------------------------------------------------------------


def _user_agent(request: web.Request) -> str | None:
    value = request.headers.get("User-Agent")
    return "".join(c for c in value if c.isprintable())[:500] if value else None


def _sender_name(customer: Any) -> str:
    imprint = customer.imprint or {}
    company = imprint.get("company")
    if company:
        legal = imprint.get("legal_form")
        return f"{company} {legal}" if legal and legal not in company else company
    return customer.name


class Pages:
    def __init__(self, server: Any) -> None:
        self.server = server

    @property
    def config(self) -> Any:
        return self.server.config

    @property
    def store(self) -> Any:
        return self.server.store

    def lang(self, request: web.Request) -> str:
        return language(request, self.config.http.default_language)

    def signer(self) -> Any:
        return signer_for(self.config.path(self.config.http.token_key_file))

    def claims(self, token: str, purpose: str, *, max_age: float | None = None) -> Claims | None:
        try:
            return self.signer().verify(token, purpose, max_age=max_age)
        except TokenError:
            return None

    def nonce(self, request: web.Request) -> str:
        """The nonce for the form on the page of this request's token."""
        return str(self.signer().page_nonce(request.match_info["token"]))

    def from_our_page(self, request: web.Request, form: dict[str, str]) -> PageOrigin:
        """Whether this POST is our page's form: same origin (gateway.http.origin) and a
        valid nonce of this token's page. Refused as "page-nonce" when the nonce fails."""
        checked = page_origin(request, self.config.http.public_url)
        if not checked.ok:
            return checked
        try:
            self.signer().check_page_nonce(request.match_info["token"], form.get("nonce", ""))
        except TokenError:
            return PageOrigin(False, "page-nonce")
        return checked

    def invalid(self, request: web.Request, lang: str) -> web.Response:
        body = f"<h1>{t(lang, 'invalid_title')}</h1>\n<p>{t(lang, 'invalid_text')}</p>"
        return page(request, lang, T[lang]["invalid_title"], body, status=404)

    def mount(self, app: web.Application) -> None:
        app.router.add_get("/u/{token}", self.unsubscribe_page)
        app.router.add_post("/u/{token}", self.unsubscribe_post)
        app.router.add_get("/c/{token}", self.confirm_page)
        app.router.add_post("/c/{token}", self.confirm_post)
        app.router.add_get("/report", self.report_page)
        app.router.add_post("/report", self.report_post)

    # -- unsubscribe ---------------------------------------------------------------------------
    async def _unsubscribe_target(self, request: web.Request) -> tuple[Claims, Any] | None:
        claims = self.claims(request.match_info["token"], UNSUBSCRIBE)
        if claims is None:
            return None
        customer = await asyncio.to_thread(self.store.get_customer_by_id, claims.customer_id)
        if customer is None:
            return None
        return claims, customer

    async def unsubscribe_page(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        target = await self._unsubscribe_target(request)
        if target is None:
            PAGE_ACTIONS.labels("unsubscribe", "invalid").inc()
            return self.invalid(request, lang)
        claims, customer = target
        sender, address = _sender_name(customer), claims.recipient
        existing = await asyncio.to_thread(self.store.get_suppression, customer.id, address)
        title = T[lang]["unsub_title"]
        if existing is not None and existing.reason in ("unsubscribe", "complaint"):
            body = (
                f'<h1>{e(title)}</h1>\n<p class="ok" role="status">'
                f"{t(lang, 'unsub_already', address=strong(address), sender=strong(sender))}"
                "</p>"
            )
            return page(request, lang, title, body)
        body = (
            f"<h1>{e(title)}</h1>\n"
            f"<p>{t(lang, 'unsub_question', sender=strong(sender), address=strong(address))}</p>\n"
            f'<form method="post" action="{e(here(request))}?lang={lang}">\n'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">\n'
            '<input type="hidden" name="via" value="page">\n'
            f'<input type="hidden" name="nonce" value="{e(self.nonce(request))}">\n'
            f'<button type="submit">{t(lang, "unsub_button")}</button>\n'
            "</form>\n"
            f'<p class="hint">{t(lang, "unsub_hint")}</p>'
        )
        return page(request, lang, title, body)

    async def unsubscribe_post(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        target = await self._unsubscribe_target(request)
        if target is None:
            PAGE_ACTIONS.labels("unsubscribe", "invalid").inc()
            return self.invalid(request, lang)
        claims, customer = target
        form = await _form_fields(request)
        if form.get("List-Unsubscribe") != "One-Click":
            PAGE_ACTIONS.labels("unsubscribe", "bad-request").inc()
            title = T[lang]["unsub_title"]
            body = (
                f'<h1>{e(title)}</h1>\n<p class="problem">{t(lang, "unsub_bad_request")}'
                f'</p>\n<p><a href="{e(here(request))}?lang={lang}">{e(title)}</a></p>'
            )
            return page(request, lang, title, body, status=400)
        # The page's button says via=page; only a post that really came from our page (same
        # origin, a nonce of this token's page) is recorded so. Any other post with the
        # one-click body is the RFC 8058 one-click, which mail clients send cross-origin by
        # design: it unsubscribes all the same.
        via = "page" if (form.get("via") == "page" and self.from_our_page(request, form).ok) else "one-click"
        ip = client_ip(request, self.config.http.trusted_proxies)
        added = await asyncio.to_thread(self._unsubscribe, claims, customer, via, ip)
        PAGE_ACTIONS.labels("unsubscribe", "added" if added else "exists").inc()
        title = T[lang]["unsub_done_title"]
        sender, address = _sender_name(customer), claims.recipient
        body = (
            f'<h1>{e(title)}</h1>\n<p class="ok" role="status">'
            f"{t(lang, 'unsub_done', sender=strong(sender), address=strong(address))}</p>"
        )
        return page(request, lang, title, body)

    def _unsubscribe(self, claims: Claims, customer: Any, via: str, ip: str) -> bool:
        detail = ("one-click unsubscribe (RFC 8058)" if via == "one-click" else "unsubscribe page") + (
            f", list {claims.list_label}" if claims.list_label else ""
        )
        with self.store.transaction():
            entry, added = self.store.add_suppression(
                customer.id,
                claims.recipient,
                "unsubscribe",
                detail=detail,
                mail_id=claims.reference or None,
                by=f"http:{via}",
            )
            _, revoked = self.store.consent_revoke(
                customer.id, claims.recipient, reason=f"unsubscribed ({detail})", via=f"http:{via}"
            )
            if added:  # a repeated click changes nothing and tells the customer nothing new
                self.store.emit_event(
                    customer.id,
                    "unsubscribe",
                    {"via": via, "list": claims.list_label or None, "mail_id": claims.reference or None},
                    recipient=claims.recipient,
                )
        if added:
            metrics.SUPPRESSIONS.labels("unsubscribe").inc()
        log.event(
            "unsubscribe",
            mail_id=claims.reference or None,
            customer=customer.name,
            rcpt=claims.recipient,
            via=via,
            list=claims.list_label or None,
            result="added" if added else "exists",
            consent="revoked" if revoked else None,
            ip=ip,
        )
        log.event(
            "suppression",
            mail_id=claims.reference or None,
            rcpt=claims.recipient,
            scope=customer.name,
            reason="unsubscribe",
            result="added" if added else "exists",
            detail=detail,
        )
        return added

    # -- DOI confirmation ----------------------------------------------------------------------
    async def _confirm_target(self, request: web.Request, lang: str) -> tuple[Claims, Any] | web.Response:
        token = request.match_info["token"]
        days = self.config.http.confirm_link_days
        claims = self.claims(token, CONFIRM)
        if claims is None:
            PAGE_ACTIONS.labels("confirm", "invalid").inc()
            return self.invalid(request, lang)
        if days > 0 and self.claims(token, CONFIRM, max_age=days * DAY) is None:
            PAGE_ACTIONS.labels("confirm", "expired").inc()
            title = T[lang]["confirm_expired_title"]
            body = f"<h1>{e(title)}</h1>\n<p>{t(lang, 'confirm_expired')}</p>"
            return page(request, lang, title, body, status=410)
        customer = await asyncio.to_thread(self.store.get_customer_by_id, claims.customer_id)
        if customer is None:
            return self.invalid(request, lang)
        return claims, customer

    def _confirm_state(
        self, request: web.Request, lang: str, claims: Claims, customer: Any, record: Any, outcome: str
    ) -> web.Response:
        sender, address = _sender_name(customer), claims.recipient
        values = {"sender": strong(sender), "address": strong(address)}
        if outcome == "confirmed":
            title = T[lang]["confirm_done_title"]
            body = f'<h1>{e(title)}</h1>\n<p class="ok" role="status">{t(lang, "confirm_done", **values)}</p>'
            return page(request, lang, title, body)
        title = T[lang]["confirm_title"]
        if outcome == "already-confirmed":
            text, css, status = t(lang, "confirm_already", **values), "ok", 200
        elif outcome == "revoked":
            text = t(lang, "confirm_revoked", date=_date(record.revoked_at, lang))
            css, status = "problem", 409
        elif outcome == "superseded":
            text, css, status = t(lang, "confirm_superseded"), "problem", 409
        else:
            text, css, status = t(lang, "confirm_unknown"), "problem", 404
        body = f'<h1>{e(title)}</h1>\n<p class="{css}" role="status">{text}</p>'
        return page(request, lang, title, body, status=status)

    @staticmethod
    def _generation(claims: Claims) -> int | None:
        return int(claims.reference) if claims.reference.isdigit() else None

    async def confirm_page(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        target = await self._confirm_target(request, lang)
        if isinstance(target, web.Response):
            return target
        claims, customer = target
        record = await asyncio.to_thread(self.store.read_consent, customer.id, claims.recipient)
        generation = self._generation(claims)
        if record is None:
            outcome = "unknown"
        elif generation is not None and generation != record.generation:
            outcome = "superseded"
        elif record.status != "pending":
            outcome = "already-confirmed" if record.status == "confirmed" else "revoked"
        else:
            title = T[lang]["confirm_title"]
            values = {"sender": strong(_sender_name(customer)), "address": strong(claims.recipient)}
            body = (
                f"<h1>{e(title)}</h1>\n<p>{t(lang, 'confirm_question', **values)}</p>\n"
                f'<form method="post" action="{e(here(request))}?lang={lang}">\n'
                '<input type="hidden" name="confirm" value="yes">\n'
                f'<input type="hidden" name="nonce" value="{e(self.nonce(request))}">\n'
                f'<button type="submit">{t(lang, "confirm_button")}</button>\n</form>\n'
                f'<p class="hint">{t(lang, "confirm_hint")}</p>'
            )
            return page(request, lang, title, body)
        return self._confirm_state(request, lang, claims, customer, record, outcome)

    async def confirm_post(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        target = await self._confirm_target(request, lang)
        if isinstance(target, web.Response):
            return target
        claims, customer = target
        form = await _form_fields(request)
        ip = client_ip(request, self.config.http.trusted_proxies)
        checked = self.from_our_page(request, form)
        if not checked.ok:
            PAGE_ACTIONS.labels("confirm", "not-from-page").inc()
            log.event(
                "consent",
                customer=customer.name,
                rcpt=claims.recipient,
                action="confirm",
                result="refused",
                reason=checked.how,
                ip=ip,
                via="confirm-page",
            )
            title = T[lang]["confirm_refused_title"]
            body = (
                f'<h1>{e(title)}</h1>\n<p class="problem" role="status">'
                f'{t(lang, "confirm_refused")}</p>\n<p><a href="{e(here(request))}?lang='
                f'{lang}">{t(lang, "confirm_open_page")}</a></p>'
            )
            return page(request, lang, title, body, status=403)
        agent = _user_agent(request)
        record, outcome = await asyncio.to_thread(
            self.store.consent_confirm,
            customer.id,
            claims.recipient,
            at=time.time(),
            ip=ip,
            user_agent=agent,
            via="http:confirm-page",
            generation=self._generation(claims),
            checks={"origin_check": checked.how, "page_nonce": "valid"},
        )
        PAGE_ACTIONS.labels("confirm", outcome).inc()
        log.event(
            "consent",
            customer=customer.name,
            rcpt=claims.recipient,
            action="confirm",
            result=outcome,
            ip=ip,
            via="confirm-page",
        )
        if outcome == "confirmed" and record is not None:
            await asyncio.to_thread(self._lift_old_unsubscribe, customer, record)
        return self._confirm_state(request, lang, claims, customer, record, outcome)

    def _lift_old_unsubscribe(self, customer: Any, record: Any) -> None:
        """A confirmed new subscription outweighs this customer's unsubscribe suppression from
        before it. Only here, where the gateway itself saw the recipient confirm: a
        confirmation claimed over the API never lifts a suppression; complaints and global
        suppressions are never lifted."""
        entry = self.store.get_suppression(customer.id, record.address)
        if entry is None or entry.reason != "unsubscribe" or entry.created_at > record.subscribed_at:
            return
        self.store.remove_suppression(customer.id, record.address, by="http:confirm-page")
        log.event(
            "suppression",
            rcpt=record.address,
            scope=customer.name,
            reason=entry.reason,
            result="removed",
            detail="confirmed a new subscription (double opt-in)",
        )

    # -- report abuse --------------------------------------------------------------------------
    def _report_form(
        self, request: web.Request, lang: str, *, error: str | None = None, value: str = "", status: int = 200
    ) -> web.Response:
        title = T[lang]["report_title"]
        header = self.config.mail_id.header
        problem = f'<p class="error" id="report-error" role="alert">{e(error)}</p>\n' if error else ""
        described = (
            ' aria-describedby="mail_id_hint report-error"' if error else ' aria-describedby="mail_id_hint"'
        )
        body = (
            f"<h1>{e(title)}</h1>\n<p>{t(lang, 'report_intro')}</p>\n{problem}"
            f'<form method="post" action="report?lang={lang}" enctype="multipart/form-data">\n'
            f'<label for="mail_id">{t(lang, "report_id_label")}</label>\n'
            f'<p class="hint" id="mail_id_hint">{t(lang, "report_id_hint", header=code(header))}'
            "</p>\n"
            f'<textarea id="mail_id" name="mail_id" rows="3" spellcheck="false" '
            f'autocomplete="off"{described}>{e(value)}</textarea>\n'
            f'<label for="eml">{t(lang, "report_file_label")}</label>\n'
            f'<p class="hint" id="eml_hint">{t(lang, "report_file_hint")}</p>\n'
            '<input type="file" id="eml" name="eml" accept=".eml,message/rfc822,text/plain" '
            'aria-describedby="eml_hint">\n'
            f'<p><button type="submit">{t(lang, "report_button")}</button></p>\n</form>'
        )
        return page(request, lang, title, body, status=status, path="report")

    async def report_page(self, request: web.Request) -> web.Response:
        return self._report_form(request, self.lang(request))

    def _rate_limited(self, ip: str) -> bool:
        """Over `report_limit_per_hour` for this client (its /64 for IPv6): counted in the
        store, so the limit holds across workers and nodes."""
        hit = self.store.window_hit(
            REPORT_LIMIT_SCOPE,
            report_limit_key(ip),
            window=HOUR,
            limit=self.config.http.report_limit_per_hour,
        )
        return not hit.allowed

    async def report_post(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        ip = client_ip(request, self.config.http.trusted_proxies)
        limit = self.config.http.max_upload_bytes
        text, upload = "", b""
        try:
            if request.content_type.startswith("multipart/"):
                reader = await request.multipart()
                while (part := await reader.next()) is not None:
                    if not isinstance(part, BodyPartReader):
                        continue  # a nested multipart: not something this form sends
                    name = part.name
                    data = bytearray()
                    while chunk := await part.read_chunk():
                        data += chunk
                        if len(data) > limit:
                            raise _TooBig
                    if name == "mail_id":
                        text = bytes(data).decode("utf-8", "replace")
                    elif name == "eml":
                        upload = bytes(data)
            else:
                form = await _form_fields(request)
                text = form.get("mail_id", "")
        except _TooBig:
            return self._report_form(request, lang, error=T[lang]["report_too_big"], status=413)
        text = text.strip()[:20_000]
        if not text and not upload.strip():
            return self._report_form(request, lang, error=T[lang]["report_missing"], status=400)
        if await asyncio.to_thread(self._rate_limited, ip):
            PAGE_ACTIONS.labels("report", "rate-limited").inc()
            return self._report_form(request, lang, error=T[lang]["report_limited"], value=text, status=429)
        if upload.strip():
            raw = _uploaded_report(upload, ip, self.config.mail_id.header)
        else:
            # IDs are lower-case; people retype them in capitals too.
            raw = _pasted_report(_ID_ANY_CASE.sub(lambda m: m.group(0).lower(), text), ip)
        result = await asyncio.to_thread(self._ingest, raw)
        return self._report_result(request, lang, result)

    def _ingest(self, raw: bytes) -> Any:
        from gateway.feedback.intake import Intake

        engine = self.server.state.engine
        return Intake(self.config, self.store, engine.codec).ingest(
            raw, source="report-page", force_complaint=True
        )

    def _report_result(self, request: web.Request, lang: str, result: Any) -> web.Response:
        event, check = result.event, result.check
        again = f'<p><a href="report?lang={lang}">{t(lang, "report_again")}</a></p>'
        if check.mail_id is None or check.status in ("malformed", "none"):
            PAGE_ACTIONS.labels("report", "no-mail-id").inc()
            title = T[lang]["report_none_title"]
            body = (
                f'<h1>{e(title)}</h1>\n<p class="problem" role="status">{t(lang, "report_none")}</p>\n{again}'
            )
            return page(request, lang, title, body, status=422, path="report")
        if not check.genuine:
            key = "report_altered" if check.status == "altered" else "report_forged"
            PAGE_ACTIONS.labels("report", check.status).inc()
            title = T[lang][key + "_title"]
            body = (
                f'<h1>{e(title)}</h1>\n<p class="problem" role="status">'
                f"{t(lang, key, mail_id=code(check.mail_id))}</p>\n{again}"
            )
            return page(request, lang, title, body, status=422, path="report")
        PAGE_ACTIONS.labels("report", "recorded").inc()
        customer = self.store.get_customer_by_id(event.customer_id) if event.customer_id else None
        sender = _sender_name(customer) if customer is not None else "-"
        title = T[lang]["report_done_title"]
        lines = [t(lang, "report_done", mail_id=code(check.mail_id), sender=strong(sender))]
        if result.suppressions:
            lines.append(t(lang, "report_suppressed"))
        elif event.action and event.action.startswith("duplicate"):
            lines.append(t(lang, "report_duplicate"))
        lines.append(t(lang, "report_reference", reference=f"#{event.id}"))
        body = (
            f'<h1>{e(title)}</h1>\n<div class="ok" role="status">'
            + "".join(f"<p>{line}</p>" for line in lines)
            + f"</div>\n{again}"
        )
        return page(request, lang, title, body, path="report")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """A store that is down answers 503 (retry later), never a stack trace."""
    from gateway.store import StoreUnavailable

    try:
        return await handler(request)
    except StoreUnavailable as exc:
        log.error("http", path=request.path.split("/")[1] if "/" in request.path else "", error=str(exc))
        if request.path.startswith("/api/"):
            return web.json_response(
                {"error": "temporarily unavailable, try again later"},
                status=503,
                headers={"Retry-After": "60"},
            )
        lang = language(request)
        title = "Vorübergehend nicht verfügbar" if lang == "de" else "Temporarily unavailable"
        text = (
            "Bitte versuchen Sie es in ein paar Minuten erneut."
            if lang == "de"
            else "Please try again in a few minutes."
        )
        response = page(request, lang, title, f"<h1>{e(title)}</h1>\n<p>{e(text)}</p>", status=503)
        response.headers["Retry-After"] = "60"
        return response


class _TooBig(Exception):
    pass


def _pasted_report(text: str, ip: str) -> bytes:
    """What the form sends to intake for a pasted ID or pasted headers: a small forward-style
    message whose text holds them (intake finds IDs in text, as in inline forwards)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    safe = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    return (
        "From: report-abuse page <report-page@localhost>\r\n"
        "Subject: Complaint via the report-abuse page\r\n"
        f"Date: {now}\r\n"
        f"X-Report-Client-IP: {ip}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "A recipient reported this email as unwanted on the report-abuse page.\r\n"
        "\r\n" + safe + "\r\n"
    ).encode("utf-8")


def _uploaded_report(upload: bytes, ip: str, header: str) -> bytes:
    """An uploaded email as intake sees it. The email itself (it carries our mail ID header at
    its top) is wrapped as the attachment of a forward, the way people forward mail to abuse@;
    anything else (a forward, a feedback report) goes in as it is."""
    head = upload.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    if not re.search(rb"(?im)^" + re.escape(header.encode()) + rb"[ \t]*:", head):
        return upload
    boundary = "report-" + uuid.uuid4().hex
    now = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        (
            "From: report-abuse page <report-page@localhost>\r\n"
            "Subject: Complaint via the report-abuse page\r\n"
            f"Date: {now}\r\n"
            f"X-Report-Client-IP: {ip}\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
            "\r\n"
            f"--{boundary}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
            "A recipient reported the attached email as unwanted on the report-abuse page.\r\n"
            f"--{boundary}\r\n"
            "Content-Type: message/rfc822\r\n"
            'Content-Disposition: attachment; filename="reported.eml"\r\n'
            "\r\n"
        ).encode()
        + upload.rstrip(b"\r\n")
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def _form_fields(request: web.Request, limit: int = 64 * 1024) -> dict[str, str]:
    """Form fields of a POST, whatever its content type (RFC 8058 allows urlencoded and
    multipart; some senders send the bare body without a type)."""
    ctype = request.content_type
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            posted = await request.post()
        except ValueError:
            return {}
        return {k: v for k, v in posted.items() if isinstance(v, str)}
    body = await request.content.read(limit)
    try:
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    except ValueError:
        return {}
    return {k: v[0] for k, v in parsed.items() if v}
