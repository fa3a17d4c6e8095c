"""Amazon SES / SNS JSON notifications delivered by mail ("AWS Notification Message").

Not a standard, but common when an ESP relays through SES: the body is the SNS envelope
(or the bare SES event) as JSON. Only what the classifier needs is extracted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from gateway.mime import returned


@dataclass
class SesRecipient:
    recipient: str
    action: str
    status: str | None
    diagnostic: str


@dataclass
class SesNotification:
    notification_type: str  # "bounce" | "complaint" | "delivery"
    bounce_type: str | None = None  # Permanent | Transient | Undetermined
    bounce_subtype: str | None = None
    feedback_type: str | None = None
    recipients: list[SesRecipient] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # of the original (mail.headers)


def _load_json(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    blob = text[start : end + 1]
    # Some relays fold the long JSON line ("\n " continuation); unfold and retry.
    for candidate in (blob, blob.replace("\n ", "").replace("\r\n ", ""), blob.replace("\n", "")):
        try:
            data = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict):
            return data
    return None


def parse_ses(msg: Message) -> SesNotification | None:
    if msg.is_multipart():
        return None
    text = returned.part_text(msg)
    if "notificationType" not in text and "eventType" not in text:
        return None
    data = _load_json(text)
    if data is None:
        return None
    if isinstance(data.get("Message"), str):  # SNS envelope around the SES event
        inner = _load_json(data["Message"])
        if inner is None:
            return None
        data = inner
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    if kind not in ("bounce", "complaint", "delivery"):
        return None
    note = SesNotification(notification_type=kind, headers=_headers(data.get("mail")))
    if kind == "bounce":
        bounce = data.get("bounce") or {}
        note.bounce_type = bounce.get("bounceType")
        note.bounce_subtype = bounce.get("bounceSubType")
        for item in bounce.get("bouncedRecipients") or []:
            if isinstance(item, dict) and item.get("emailAddress"):
                note.recipients.append(
                    SesRecipient(
                        recipient=str(item["emailAddress"]).lower(),
                        action=str(item.get("action") or "failed").lower(),
                        status=item.get("status"),
                        diagnostic=_strip_type(str(item.get("diagnosticCode") or "")),
                    )
                )
    elif kind == "complaint":
        complaint = data.get("complaint") or {}
        note.feedback_type = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        for item in complaint.get("complainedRecipients") or []:
            if isinstance(item, dict) and item.get("emailAddress"):
                note.recipients.append(
                    SesRecipient(str(item["emailAddress"]).lower(), "complained", None, "")
                )
    else:
        delivery = data.get("delivery") or {}
        for addr in delivery.get("recipients") or []:
            note.recipients.append(
                SesRecipient(str(addr).lower(), "delivered", None, str(delivery.get("smtpResponse") or ""))
            )
    return note


def _strip_type(value: str) -> str:
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and len(kind) < 20 and " " not in kind.strip() else value


def _headers(mail: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if not isinstance(mail, dict):
        return out
    for item in mail.get("headers") or []:
        if isinstance(item, dict) and "name" in item and "value" in item:
            out.setdefault(str(item["name"]).lower(), str(item["value"]))
    return out
