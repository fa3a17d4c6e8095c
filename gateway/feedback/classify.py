"""Entry point: what is this returned mail, whom does it concern, and which mail caused it?

``analyze(raw)`` is pure (no I/O, no store): it parses bounces (RFC 3464 and the
non-standard kinds), complaints (ARF, JMRP, forwards), auto-replies, and returns the mail
ID candidates in the order RULES.md asks for. The caller verifies the mail ID's HMAC and acts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from functools import cached_property
from pathlib import PurePath
from typing import Any

from gateway.mime import returned

from . import arf, dsn, rules, ses

DEFAULT_MAILID_RE: re.Pattern[str] = re.compile(r"[a-z2-7]{16,64}")

KINDS = ("bounce", "complaint", "auto-reply", "delay", "other")
# Summary class when recipients differ: the one that demands the strongest action.
_SEVERITY = {rules.HARD: 3, rules.SOFT: 2, rules.NRF: 1, rules.NONE: 0}
# Bounded work on hostile input: the reason is in the first part of a bounce's text, and
# an ID pasted into a complaint is near its top.
_MAX_SCAN = 64 * 1024
_MAX_TEXT_IDS = 10
# One recipient's text as classified (its diagnostic, or diagnostic + context): ~50 regexes
# read it, and real diagnostics are under 1.1 KB (the whole notification, read once per
# report, keeps rules.MAX_TEXT).
_MAX_RECIPIENT_TEXT = 2048

AUTO_REPLY_SUBJECT_RE = re.compile(
    r"out of (the )?office|\booo\b|autorespon|abwesen|urlaub|vacation|\babsen(ce|t)\b"
    r"|auto(matic|matische|matisch)?[ -]?(reply|response|antwort|answer|risposta|respuesta|r[ée]ponse)"
    r"|away (from|until)|on (vacation|holiday|leave)"
    r"|r[ée]ponse automatique|respuesta autom[aá]tica|risposta automatica|automatisch antwoord"
    r"|afwezig|fuera de la oficina|assente|ausente|congés|i am away|i'm away|not in the office",
    re.I,
)


# What mail programs put before the subject of a forward (en, de, fr, es/pt, it, nl, nordic).
FORWARD_SUBJECT_RE = re.compile(
    r"^\s*(\[[^\]]{0,40}\]\s*)?(fwd?|fw|wg|tr|rv|enc|i|vs|vl|doorst|fwd\[\d+\])\s*:", re.I
)


@dataclass
class RecipientResult:
    recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded | complained | auto-replied
    status: str | None
    bounce_class: str
    reason: str


@dataclass
class FeedbackAnalysis:
    kind: str  # "bounce" | "complaint" | "auto-reply" | "delay" | "other"
    recipients: list[str] = field(default_factory=list)
    bounce_class: str = rules.NONE  # "hard" | "soft" | "not-recipient-fault" | "none"
    status: str | None = None  # enhanced code like "5.1.1"
    reason: str = ""  # short human reason incl. the rule name
    mail_ids: list[str] = field(default_factory=list)  # candidates, best first
    feedback_type: str | None = None
    original_headers: dict[str, str] = field(default_factory=dict)
    per_recipient: list[RecipientResult] = field(default_factory=list)
    source: str = ""  # which parser understood it: rfc3464, text, arf, jmrp, ses, ...


@dataclass(frozen=True)
class _IdConfig:
    header: str
    prefix: str
    domains: frozenset[str]
    pattern: re.Pattern[str]
    envelope: tuple[str, ...]

    @cached_property
    def token_re(self) -> re.Pattern[str]:
        """A bare ID in text: not glued to other letters or digits."""
        return re.compile(rf"(?<![A-Za-z0-9])(?:{self.pattern.pattern})(?![A-Za-z0-9])")

    @cached_property
    def labelled_re(self) -> re.Pattern[str]:
        """'X-Mailing-ID: <id>' quoted in text (inline forwards, pasted headers)."""
        header = re.escape(self.header)
        return re.compile(rf"{header}\s*[:=]\s*<?((?:{self.pattern.pattern}))", re.I)

    @cached_property
    def original_header_names(self) -> tuple[str, ...]:
        return ("From", "To", "Subject", "Message-ID", "Date", self.header, "X-Campaign-ID")


def analyze(
    raw: bytes,
    *,
    mailid_header: str = "X-Mailing-ID",
    verp_prefix: str = "m",
    bounce_domains: Sequence[str] = (),
    mailid_pattern: re.Pattern[str] = DEFAULT_MAILID_RE,
    envelope_recipients: Sequence[str] = (),
) -> FeedbackAnalysis:
    """Classify returned mail. Never raises on malformed input: kind "other" with a reason."""
    cfg = _IdConfig(
        header=mailid_header,
        prefix=verp_prefix.lower(),
        domains=frozenset(d.lower().rstrip(".") for d in bounce_domains),
        pattern=mailid_pattern,
        envelope=tuple(envelope_recipients),
    )
    try:
        msg = returned.parse_bytes(raw)
        analysis = _analyze(msg, cfg)
    except Exception as exc:  # noqa: BLE001 - hostile/broken input must not kill the listener
        analysis = FeedbackAnalysis(kind="other", reason=f"unparseable: {type(exc).__name__}")
        try:
            analysis.mail_ids = _verp_ids(cfg.envelope, cfg)
        except Exception:  # noqa: BLE001
            pass
    return analysis


def _analyze(msg: Message, cfg: _IdConfig) -> FeedbackAnalysis:
    if arf.is_arf(msg):
        report = arf.parse_arf(msg)
        if report is not None:
            return _from_feedback(msg, report, cfg)
    note = ses.parse_ses(msg)
    if note is not None:
        return _from_ses(msg, note, cfg)
    if dsn.is_delivery_report(msg):
        bounce = dsn.parse_bounce(msg)
        if bounce is not None:
            return _from_bounce(msg, bounce, cfg)
    forwarded = _forwarded_notification(msg)
    if forwarded is not None:
        # A person passed on a bounce or report they got: never their complaint about our
        # mail; the forwarded report alone says what happened (RULES.md "Bounces").
        return _from_forwarded(msg, forwarded, cfg)
    for parse in (arf.parse_apple_unsubscribe, arf.parse_jmrp):
        report = parse(msg)
        if report is not None:
            return _from_feedback(msg, report, cfg)
    if dsn.looks_like_bounce(msg) and not _auto_reply_subject(msg):
        # Not excluded by Auto-Submitted: bounces carry "auto-replied" too (RFC 3834 §5).
        bounce = dsn.parse_bounce(msg)
        if bounce is not None:
            return _from_bounce(msg, bounce, cfg)
    if _is_auto_reply(msg):
        return _from_auto_reply(msg, cfg)
    report = arf.parse_forward(msg, cfg.header)
    if report is not None:
        return _from_feedback(msg, report, cfg)
    report = arf.parse_inline_forward(msg)
    if report is not None:
        return _from_feedback(msg, report, cfg)
    analysis = FeedbackAnalysis(kind="other", reason="not a bounce, complaint or auto-reply")
    analysis.mail_ids = _mail_ids(msg, cfg, original=None, extra_addresses=())
    if _labelled_ids(msg, cfg) and not _verp_ids(_envelope_addresses(msg, cfg), cfg):
        # A person pasted our mail (with its "X-Mailing-ID: ..." line) into a new message:
        # an inline forward without the usual marker. Bare tokens are not enough here,
        # long ordinary words fit the ID alphabet. Mail that came in on a VERP address is
        # an answer of some machine to our envelope sender, not a person complaining.
        analysis.kind = "complaint"
        analysis.feedback_type = "abuse"
        analysis.reason = "complaint: mail ID found in text"
        analysis.recipients = returned.header_addresses(msg, "From")[:1]
        analysis.source = "inline"
    return analysis


# --- bounces ----------------------------------------------------------------------------------


def _from_bounce(msg: Message, bounce: dsn.BounceReport, cfg: _IdConfig) -> FeedbackAnalysis:
    memo = _ClassifyMemo(bounce.text[:_MAX_SCAN])
    results = [_classify_recipient(r, memo) for r in bounce.recipients]
    # A failure a rule calls "none" (a challenge-response system) is no bounce.
    failed = [r for r in results if r.action == "failed" and r.bounce_class != rules.NONE]
    delayed = [r for r in results if r.action == "delayed"]
    if failed:
        kind, chosen = "bounce", failed
    elif delayed:
        kind, chosen = "delay", delayed
    else:
        kind, chosen = "other", results
    top = max(chosen, key=lambda r: _SEVERITY[r.bounce_class])
    extra = [r.recipient for r in bounce.recipients] + [
        r.original_recipient for r in bounce.recipients if r.original_recipient
    ]
    ids = _mail_ids(
        msg,
        cfg,
        original=bounce.original,
        extra_addresses=extra,
        header_ids=[bounce.envelope_id] if bounce.envelope_id else [],
    )
    return FeedbackAnalysis(
        kind=kind,
        recipients=_unique(r.recipient for r in chosen),
        bounce_class=top.bounce_class if kind == "bounce" else rules.NONE,
        status=top.status,
        reason=top.reason if kind == "bounce" else f"{kind}: {top.reason}",
        mail_ids=ids,
        original_headers=_original_headers(bounce.original, cfg),
        per_recipient=results,
        source=bounce.source,
    )


class _ClassifyMemo:
    """One report's classifications, each computed once. A crafted bounce naming a hundred
    recipients whose diagnostics say nothing made every recipient classify the same 16 KB
    notification again (about 60 ms of regexes each, seconds per report)."""

    def __init__(self, scan: str) -> None:
        self.scan = scan
        self._done: dict[tuple[str | None, str | None, str, str | None], rules.Classification] = {}
        self._scan_codes: tuple[str | None, str | None] | None = None

    def classify(
        self, status: str | None, reply: str | None, text: str, phase: str | None
    ) -> rules.Classification:
        key = (status, reply, text, phase)
        if key not in self._done:
            returned.check_budget()
            self._done[key] = rules.classify(status, reply, text, phase)
        return self._done[key]

    def scan_codes(self) -> tuple[str | None, str | None]:
        """(enhanced status, reply code) of the whole notification."""
        if self._scan_codes is None:
            self._scan_codes = (dsn.find_status(self.scan), dsn.find_reply(self.scan))
        return self._scan_codes


def _classify_recipient(rcpt: dsn.DsnRecipient, memo: _ClassifyMemo) -> RecipientResult:
    if rcpt.action != "failed":
        detail = rcpt.diagnostic or rcpt.status or ""
        return RecipientResult(
            rcpt.recipient,
            rcpt.action,
            rcpt.status,
            rules.NONE,
            f"{rcpt.action}{': ' + _short(detail) if detail else ''}",
        )
    diagnostic = rcpt.diagnostic[:_MAX_RECIPIENT_TEXT]
    result = memo.classify(rcpt.status, rcpt.reply_code, diagnostic, rcpt.phase)
    detail = rcpt.diagnostic
    if result.rule in rules.WEAK_RULES and rcpt.context and rcpt.context != rcpt.diagnostic:
        # The structured diagnostic said nothing we understand: read the notification's
        # lines about this recipient, then the whole notification.
        wider = memo.classify(
            rcpt.status, rcpt.reply_code, f"{diagnostic}\n{rcpt.context}"[:_MAX_RECIPIENT_TEXT], rcpt.phase
        )
        if wider.rule not in rules.WEAK_RULES:
            result, detail = wider, detail or rcpt.context
    scan = memo.scan
    if result.rule in rules.WEAK_RULES and scan:
        scan_status, scan_reply = memo.scan_codes()
        status = rcpt.status or scan_status
        reply = rcpt.reply_code or scan_reply
        whole = memo.classify(status, reply, scan, rcpt.phase)
        if whole.rule not in rules.WEAK_RULES or (status and not rcpt.status):
            result = whole
            rcpt.status = status
            detail = detail or _first_line_with_code(scan)
    reason = result.rule + (f": {_short(detail)}" if detail else "")
    return RecipientResult(rcpt.recipient, rcpt.action, rcpt.status, result.bounce_class, reason)


def _first_line_with_code(text: str) -> str:
    for line in text.split("\n"):
        if dsn.REPLY_RE.search(line) or dsn.ENHANCED_RE.search(line):
            return line.strip()
    return ""


def _from_ses(msg: Message, note: ses.SesNotification, cfg: _IdConfig) -> FeedbackAnalysis:
    own = note.headers.get(cfg.header.lower())
    ids = _mail_ids(msg, cfg, original=None, extra_addresses=(), header_ids=[own] if own else [])
    headers = {
        name: note.headers[name.lower()]
        for name in cfg.original_header_names
        if note.headers.get(name.lower())
    }
    if note.notification_type == "complaint":
        return FeedbackAnalysis(
            kind="complaint" if note.feedback_type not in arf.NOT_COMPLAINT_TYPES else "other",
            recipients=[r.recipient for r in note.recipients],
            reason=f"complaint: {note.feedback_type} (SES notification)",
            mail_ids=ids,
            feedback_type=note.feedback_type,
            original_headers=headers,
            per_recipient=[
                RecipientResult(r.recipient, "complained", None, rules.NONE, note.feedback_type or "abuse")
                for r in note.recipients
            ],
            source="ses",
        )
    rcpts = [
        dsn.DsnRecipient(
            recipient=r.recipient,
            action=r.action,
            status=r.status,
            reply_code=dsn.find_reply(r.diagnostic),
            diagnostic=r.diagnostic,
        )
        for r in note.recipients
    ]
    if not rcpts:
        return FeedbackAnalysis(
            kind="other",
            reason="SES notification without recipients",
            mail_ids=ids,
            original_headers=headers,
            source="ses",
        )
    report = dsn.BounceReport(source="ses", recipients=rcpts)
    analysis = _from_bounce(msg, report, cfg)
    analysis.mail_ids = ids
    analysis.original_headers = headers
    return analysis


# --- complaints and auto-replies ----------------------------------------------------------------


def _from_feedback(msg: Message, report: arf.FeedbackReport, cfg: _IdConfig) -> FeedbackAnalysis:
    extra = list(report.recipients)
    if report.original_mail_from:
        extra.insert(0, report.original_mail_from)  # the VERP envelope sender of our mail
    ids = _mail_ids(msg, cfg, original=report.original, extra_addresses=extra)
    complaint = report.is_complaint
    kind = "complaint" if complaint else "other"
    if complaint:
        reason = f"complaint: {report.feedback_type} ({report.source})"
    else:
        reason = f"{report.feedback_type} report ({report.source}): not a complaint"
    action = "complained" if complaint else report.feedback_type
    return FeedbackAnalysis(
        kind=kind,
        recipients=list(report.recipients),
        reason=reason,
        mail_ids=ids,
        feedback_type=report.feedback_type,
        original_headers=_original_headers(report.original, cfg),
        per_recipient=[RecipientResult(r, action, None, rules.NONE, reason) for r in report.recipients],
        source=report.source,
    )


def _is_auto_reply(msg: Message) -> bool:
    auto = returned.header_str(msg, "Auto-Submitted").lower()
    precedence = returned.header_str(msg, "Precedence").lower()
    if auto.startswith("auto-replied") or precedence == "auto_reply":
        return True
    if any(msg.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponder")):
        return True
    if returned.header_str(msg, "X-Apple-Action").upper() == "VACATION":
        return True
    return _auto_reply_subject(msg)


def _forwarded_notification(msg: Message) -> Message | None:
    """The bounce or feedback report a person forwarded (attached or pasted inline): the
    subject says forward, the sender is no mail system, and the forwarded mail is a DSN, a
    bounce or a feedback report."""
    subject = returned.header_str(msg, "Subject")
    if not FORWARD_SUBJECT_RE.match(subject) or dsn.BOUNCE_FROM_RE.search(returned.header_str(msg, "From")):
        return None
    if msg.get("X-Failed-Recipients") or dsn.status_part(msg) is not None or arf.is_arf(msg):
        return None
    forwarded = arf.attached_messages(msg)[:3]
    text = returned.notification_text(msg)[:_MAX_SCAN]
    mark = arf.FORWARD_MARK_RE.search(text)
    if mark is not None:
        _, inline = dsn.split_inline_original(text[mark.start() :], starts_at_separator=True)
        if inline is not None:
            forwarded.append(inline)
    for inner in forwarded:
        # Who sent the forwarded mail decides, not its subject: our own newsletter may be
        # called "Rejected? Try again" and is then a complaint like any other forward.
        machine = dsn.BOUNCE_FROM_RE.search(returned.header_str(inner, "From")) or inner.get(
            "X-Failed-Recipients"
        )
        if arf.is_arf(inner) or dsn.is_delivery_report(inner) or machine:
            return inner
    return None


def _from_forwarded(msg: Message, inner: Message, cfg: _IdConfig) -> FeedbackAnalysis:
    if arf.is_arf(inner):
        report = arf.parse_arf(inner)
        if report is not None:
            return _from_feedback(msg, report, cfg)
    elif not _auto_reply_subject(inner):
        bounce = dsn.parse_bounce(inner)
        if bounce is not None:
            return _from_bounce(msg, bounce, cfg)
    analysis = FeedbackAnalysis(
        kind="other", source="forwarded", reason="forwarded by a person: not a bounce or complaint"
    )
    analysis.mail_ids = _mail_ids(msg, cfg, original=None, extra_addresses=())
    return analysis


def _auto_reply_subject(msg: Message) -> bool:
    subject = returned.header_str(msg, "Subject")
    return bool(AUTO_REPLY_SUBJECT_RE.search(subject)) and not dsn.BOUNCE_SUBJECT_RE.search(subject)


def _from_auto_reply(msg: Message, cfg: _IdConfig) -> FeedbackAnalysis:
    who = returned.header_addresses(msg, "From")[:1]
    ids = _mail_ids(msg, cfg, original=None, extra_addresses=())
    subject = _short(returned.header_str(msg, "Subject"))
    reason = f"auto-reply: {subject}" if subject else "auto-reply"
    return FeedbackAnalysis(
        kind="auto-reply",
        recipients=who,
        reason=reason,
        mail_ids=ids,
        per_recipient=[RecipientResult(a, "auto-replied", None, rules.NONE, reason) for a in who],
        source="auto-reply",
    )


# --- mail IDs -----------------------------------------------------------------------------------


def _envelope_addresses(msg: Message, cfg: _IdConfig) -> list[str]:
    """Where a VERP address shows up on a returned mail, most reliable first."""
    addrs = [a.lower() for a in cfg.envelope]
    addrs += returned.header_addresses(
        msg, "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "X-Rcpt-To", "To", "Cc"
    )
    for received in msg.get_all("Received") or []:
        match = re.search(r"\bfor\s+<?([^>\s;]+@[^>\s;]+)", str(received), re.I)
        if match:
            addrs.append(match.group(1).lower())
    return addrs


def _verp_ids(addresses: Iterable[str], cfg: _IdConfig) -> list[str]:
    out: list[str] = []
    for addr in addresses:
        mail_id = _verp_id(addr, cfg)
        if mail_id and mail_id not in out:
            out.append(mail_id)
    return out


def _verp_id(address: str, cfg: _IdConfig) -> str | None:
    local, _, domain = address.strip().strip("<>").lower().rpartition("@")
    if not local:
        return None
    if local.startswith(("srs0=", "srs1=")):
        # Forwarders rewrite our VERP sender as SRS0=hash=tt=<domain>=<local>.
        parts = local.split("=")
        if len(parts) >= 5:
            local, domain = "=".join(parts[4:]), parts[3]
    if cfg.domains and domain.rstrip(".") not in cfg.domains:
        return None
    head = f"{cfg.prefix}-"
    if not local.startswith(head):
        return None
    candidate = local[len(head) :]
    return candidate if cfg.pattern.fullmatch(candidate) else None


def _mail_ids(
    msg: Message,
    cfg: _IdConfig,
    *,
    original: Message | None,
    extra_addresses: Iterable[str],
    header_ids: Iterable[str] = (),
) -> list[str]:
    """Candidates in RULES.md order: VERP (envelope, our headers, DSN/ARF addresses and the
    original's Return-Path), then the mail-ID header of returned/forwarded originals (and
    header_ids: the DSN's Original-Envelope-Id, SES's copy of our headers), then ID-looking
    tokens in the text."""
    addrs = _envelope_addresses(msg, cfg) + [a.lower() for a in extra_addresses if a]
    for orig in [original, *arf.attached_messages(msg)]:
        if orig is not None:
            addrs += returned.header_addresses(orig, "Return-Path", "Sender", "Errors-To")
    ids = _verp_ids(addrs, cfg)
    for orig in [original, *arf.attached_messages(msg)]:
        if orig is None:
            continue
        for value in orig.get_all(cfg.header) or []:
            _add(ids, returned.decode_header_value(str(value)).strip().strip("<>").lower(), cfg=cfg)
    for value in header_ids:
        _add(ids, value.strip().strip("<>").lower(), cfg=cfg)
    for token in _text_ids(msg, cfg):
        _add(ids, token, cfg=cfg)
    return ids


def _add(ids: list[str], candidate: str, *, cfg: _IdConfig) -> None:
    if cfg.pattern.fullmatch(candidate) and candidate not in ids:
        ids.append(candidate)


def _labelled_ids(msg: Message, cfg: _IdConfig) -> list[str]:
    return [m.group(1).lower() for m in cfg.labelled_re.finditer(_scan_text(msg))]


def _text_ids(msg: Message, cfg: _IdConfig) -> list[str]:
    blob = _scan_text(msg)
    labelled = [m.group(1).lower() for m in cfg.labelled_re.finditer(blob)]
    bare = [m.group(0) for m in cfg.token_re.finditer(blob)]
    # Random IDs nearly always contain a digit; long plain words ("internationalization")
    # also fit the base32 alphabet, so they go last.
    with_digit = [t for t in bare if any(c.isdigit() for c in t)]
    words = [t for t in bare if t not in with_digit]
    return _unique(labelled + with_digit + words)[:_MAX_TEXT_IDS]


def _scan_text(msg: Message) -> str:
    """Decoded text of every part, originals included, bounded in size."""
    texts: list[str] = []
    size = 0
    for part in returned.iter_parts(msg, into_originals=True):
        if part.is_multipart() or not returned.content_type(part).startswith(("text/", "message/")):
            continue
        text = returned.part_text(part)
        if returned.content_type(part) == "text/html":
            text = returned.html_to_text(text)
        texts.append(text[: _MAX_SCAN - size])
        size += len(texts[-1])
        if size >= _MAX_SCAN:
            break
    return "\n".join(texts)


# --- helpers ------------------------------------------------------------------------------------


def _original_headers(original: Message | None, cfg: _IdConfig) -> dict[str, str]:
    if original is None:
        return {}
    out: dict[str, str] = {}
    for name in cfg.original_header_names:
        value = returned.header_str(original, name)
        if value:
            out[name] = value
    return out


def _unique(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item and item not in out:
            out.append(item)
    return out


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_json_dict(
    file: str | PurePath, analysis: FeedbackAnalysis, mail_id_valid: bool | None
) -> dict[str, Any]:
    """The stable JSON shape of `gateway feedback ingest` output (one object per file)."""
    return {
        "file": str(file),
        "kind": analysis.kind,
        "recipients": list(analysis.recipients),
        "class": analysis.bounce_class,
        "status": analysis.status,
        "reason": analysis.reason,
        "mail_id": analysis.mail_ids[0] if analysis.mail_ids else None,
        "mail_id_valid": mail_id_valid,
    }
