"""`gateway abuse lookup MAIL-ID` and `gateway abuse report FILE.eml`: the abuse desk.

`lookup` tells everything the gateway knows about one mail: whether the ID is genuine, the
customer (status, imprint), the campaign (who confirmed the guidelines, when), the recipient,
the time, the relay result, every policy decision, consent evidence, and every bounce,
complaint and suppression tied to it. `report` ingests a complaint (a forward, an ARF report, a
CSA complaints-office mail) and prints the same for the mail ID it found, or says plainly that
it found none, or a forged one. Both exit 0 for a genuine mail ID and 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, print_json, store_of, when
from gateway.cli.feedback import _log_to_gateway_log, _read, codec_of
from gateway.cli.mailid import STATUS_MEANING


def register(sub: Any) -> None:
    group = sub.add_parser("abuse", help="abuse desk: everything about a mail ID")
    asub = group.add_subparsers(dest="abuse_command", metavar="ACTION")
    asub.required = True

    p = add_parser(
        asub,
        "lookup",
        "customer, campaign, recipient, relay result, policy "
        "decisions, consent, bounces and complaints of a mail ID",
    )
    p.add_argument("mail_id", metavar="MAIL-ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lookup)

    p = add_parser(asub, "report", "ingest a complaint and look up the mail ID it names")
    p.add_argument("file", metavar="FILE.eml", help="the complaint; '-' for stdin")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)


def _iso(value: datetime.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else None


def lookup(store: Any, codec: Any, mail_id: str) -> dict[str, Any]:
    """Everything about one mail ID, as a JSON-able dict."""
    mail_id = mail_id.strip().strip("<>").lower()
    decoded = codec.decode(mail_id)
    ledger = store.get_message(mail_id)
    status = decoded.status
    if status == "altered" and ledger is not None and len(mail_id) == 16:
        status = "stem"  # a transaction refused before DATA is in the ledger under its stem
    info: dict[str, Any] = {
        "mail_id": mail_id,
        "status": status,
        "genuine": status in ("genuine", "stem"),
        "decoded": {
            "customer_id": decoded.customer_id,
            "campaign_ref": decoded.campaign_ref,
            "time": _iso(decoded.timestamp),
            "key_id": decoded.key_id,
        },
    }
    if not info["genuine"]:
        info["problem"] = STATUS_MEANING.get(status, status)
        # Only the facts of the store that the ID itself cannot fake: none, for a bad ID.
        info["feedback"] = [_event(e) for e in store.feedback_for_mail_id(mail_id)]
        return info
    customer_id = ledger.customer_id if ledger is not None else decoded.customer_id
    customer = store.get_customer_by_id(customer_id) if customer_id else None
    info["customer"] = (
        None
        if customer is None
        else {
            "name": customer.name,
            "id": customer.id,
            "status": customer.status,
            "status_reason": customer.status_reason,
            "imprint": customer.imprint or {},
        }
    )
    campaign = store.get_campaign_by_id(decoded.campaign_ref) if decoded.campaign_ref else None
    info["campaign"] = (
        None
        if campaign is None
        else {
            "campaign": campaign.campaign,
            "id": campaign.id,
            "confirmed_by": campaign.confirmed_by,
            "confirmed_at": when(campaign.confirmed_at),
        }
    )
    if campaign is None and ledger is not None and ledger.campaign:
        info["campaign"] = {
            "campaign": ledger.campaign,
            "id": None,
            "confirmed_by": None,
            "confirmed_at": None,
        }
    recipients = []
    if ledger is not None:
        for address in ledger.recipients:
            recipients.append({"address": address, "matches_id": codec.recipient_matches(decoded, address)})
    info["recipients"] = recipients
    info["time"] = _iso(decoded.timestamp)
    info["relay"] = (
        None
        if ledger is None
        else {
            "result": ledger.result,
            "reply": ledger.reply,
            "queue_id": ledger.queue_id,
            "mail_from": ledger.mail_from,
            "recorded_at": when(ledger.created_at),
        }
    )
    info["policy_decisions"] = ledger.verdicts if ledger is not None else []
    info["consent"] = _consent(store, customer_id, [r["address"] for r in recipients])
    info["feedback"] = [_event(e) for e in store.feedback_for_mail_id(mail_id)]
    info["suppressions"] = [
        {
            "address": s.address,
            "scope": "global" if s.is_global else "customer",
            "reason": s.reason,
            "since": when(s.created_at),
            "detail": s.detail,
        }
        for s in store.suppressions_for_mail_id(mail_id)
    ]
    return info


def _consent(store: Any, customer_id: int | None, addresses: list[str]) -> list[Any]:
    """Consent evidence from the consent store, when it exists (`consent_evidence(customer_id,
    address)` returning a dict or None)."""
    finder = getattr(store, "consent_evidence", None)
    if finder is None or not customer_id:
        return []
    found = []
    for address in addresses:
        evidence = finder(customer_id, address)
        if evidence:
            found.append(evidence)
    return found


def _event(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "received_at": when(e.received_at),
        "kind": e.kind,
        "class": e.bounce_class,
        "status": e.status,
        "feedback_type": e.feedback_type,
        "recipient": e.recipient,
        "mail_id_status": e.mail_id_status,
        "reason": e.reason,
        "action": e.action,
        "source": e.source,
    }


def print_lookup(info: dict[str, Any]) -> None:
    print(f"mail ID:     {info['mail_id']}")
    if not info["genuine"]:
        print(f"status:      {info['problem']}")
        d = info["decoded"]
        if d.get("customer_id") is not None:
            print(
                f"claims:      customer id {d['customer_id']}, campaign ref "
                f"{d.get('campaign_ref') or '-'}, time {d.get('time') or '-'} (untrustworthy)"
            )
        print("not acted on: nothing in the ledger belongs to a forged or altered ID")
        _print_feedback(info.get("feedback", []))
        return
    print(f"status:      {'genuine' if info['status'] == 'genuine' else 'genuine (stem)'}")
    print(f"time:        {info['time'] or '-'}")
    c = info["customer"]
    if c is None:
        print(f"customer:    id {info['decoded']['customer_id']} (no such customer in the store)")
    else:
        print(
            f"customer:    {c['name']} (id {c['id']}, {c['status']}"
            + (f": {c['status_reason']}" if c["status_reason"] else "")
            + ")"
        )
        if c["imprint"]:
            imprint = c["imprint"]
            parts = [imprint.get("company"), imprint.get("legal_form")]
            print(f"  imprint:   {' '.join(p for p in parts if p)}")
            address = ", ".join(
                v
                for v in (
                    imprint.get("street"),
                    " ".join(x for x in (imprint.get("postcode"), imprint.get("city")) if x),
                    imprint.get("country"),
                )
                if v
            )
            if address:
                print(f"             {address}")
            for key in ("representative", "email", "phone", "register_court", "register_number", "vat_id"):
                if imprint.get(key):
                    print(f"             {key.replace('_', ' ')}: {imprint[key]}")
        else:
            print("  imprint:   (none recorded)")
    k = info["campaign"]
    if k is None:
        print("campaign:    -")
    elif k["confirmed_by"]:
        print(
            f"campaign:    {k['campaign']}: guidelines confirmed by {k['confirmed_by']} "
            f"at {k['confirmed_at']}"
        )
    else:
        print(f"campaign:    {k['campaign']} (no guideline confirmation recorded)")
    if info["recipients"]:
        for r in info["recipients"]:
            print(
                f"recipient:   {r['address']}"
                + ("" if r["matches_id"] else " (does not match the ID's recipient hash)")
            )
    else:
        print("recipient:   unknown (no ledger row; the ID holds only a keyed hash)")
    relay = info["relay"]
    if relay is None:
        print("relay:       no ledger row for this mail ID")
    else:
        print(
            f"relay:       {relay['result']}: {relay['reply'] or '-'}"
            + (f" (queue id {relay['queue_id']})" if relay["queue_id"] else "")
        )
        print(f"  envelope:  {relay['mail_from'] or '<>'}, recorded {relay['recorded_at']}")
    print("policies:" + ("" if info["policy_decisions"] else "    (none recorded)"))
    for d in info["policy_decisions"]:
        print(
            f"  {d.get('phase', '-'):<5} {d.get('policy', '-'):<20} {d.get('mode', '-'):<8} "
            f"{d.get('action', '-'):<9} {d.get('reason') or ''}"
        )
    if info["consent"]:
        print("consent:")
        for evidence in info["consent"]:
            for key, value in evidence.items() if isinstance(evidence, dict) else [("record", evidence)]:
                print(f"  {key}: {value}")
    else:
        print("consent:     no consent records")
    _print_feedback(info["feedback"])
    if info["suppressions"]:
        print("suppressions caused by this mail:")
        for s in info["suppressions"]:
            print(f"  {s['address']} ({s['scope']}, {s['reason']}) since {s['since']}")


def _print_feedback(events: list[dict[str, Any]]) -> None:
    if not events:
        print("feedback:    no bounces or complaints")
        return
    print("feedback:")
    for e in events:
        what = e["kind"] + (
            f" {e['class']} {e['status'] or ''}".rstrip()
            if e["kind"] == "bounce"
            else f" ({e['feedback_type']})"
            if e["feedback_type"]
            else ""
        )
        print(f"  #{e['id']} {e['received_at']} {what}: {e['recipient'] or '-'}; {e['action'] or '-'}")


def cmd_lookup(args: argparse.Namespace) -> int:
    config, store = store_of(args)
    info = lookup(store, codec_of(config), args.mail_id)
    if args.json:
        print_json(info)
    else:
        print_lookup(info)
    return 0 if info["genuine"] else 1


def cmd_report(args: argparse.Namespace) -> int:
    from gateway.feedback.intake import Intake

    config, store = store_of(args)
    _log_to_gateway_log(config)
    codec = codec_of(config)
    raw = _read(args.file)
    if not raw.strip():
        raise CliError(f"{args.file}: empty")
    result = Intake(config, store, codec).ingest(raw, source="abuse-report", force_complaint=True)
    event, check = result.event, result.check
    if check.mail_id is None:
        message = (
            f"{args.file}: no mail ID of this gateway found; recorded as feedback "
            f"#{event.id} ({event.kind}), nothing else done"
        )
        if args.json:
            print_json(
                {"file": args.file, "event": event.id, "kind": event.kind, "mail_id": None, "result": message}
            )
        else:
            print(message)
        return 1
    info = lookup(store, codec, check.mail_id)
    summary = f"{args.file}: recorded as feedback #{event.id} ({event.kind}); {event.action or 'recorded'}"
    if not check.genuine:
        summary = (
            f"{args.file}: the mail ID {check.mail_id} is {check.status.upper()}; "
            f"recorded as feedback #{event.id}, not acted on"
        )
    if args.json:
        print_json(
            {"file": args.file, "event": event.id, "kind": event.kind, "result": summary, "lookup": info}
        )
    else:
        print(summary)
        print()
        print_lookup(info)
    return 0 if check.genuine else 1
