"""`gateway feedback ingest | classify | list | show`: returned mail (bounces, complaints).

`ingest` is what the feedback listener does, for files and pipes: from a Postfix pipe
transport, e.g. in master.cf

    gwfeedback unix - n n - - pipe flags=Rq user=gateway argv=/usr/bin/gateway feedback
        ingest -c /etc/gateway/config.yaml --sender ${sender} --recipient ${original_recipient} -

It exits 75 (EX_TEMPFAIL) when the store is unavailable, so the MTA keeps the mail and retries.
`classify` prints what intake would conclude and changes nothing.

`ingest` follows the same rule as the feedback listener (RULES.md "Only what the gateway sent
can be bounced"): a report changes a suppression only when its mail ID verifies and names the
reported recipient; anything else is recorded as unverified and the output says why. There
is deliberately no flag to override that: a file handed to the abuse team is as easy to forge
as a bounce, and an operator who has checked a case by hand suppresses with
`gateway suppression add ADDRESS --customer NAME --reason ... --note "ticket, why"`, which
records the decision and who made it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, print_json, store_of, when
from gateway.config import Config, load_config

EX_TEMPFAIL = 75


def register(sub: Any) -> None:
    group = sub.add_parser("feedback", help="returned mail: bounces, complaints, unsubscribes")
    fsub = group.add_subparsers(dest="feedback_command", metavar="ACTION")
    fsub.required = True

    p = add_parser(
        fsub,
        "ingest",
        "record returned mail and act on it (suppress, count, ...) when its mail ID and recipient verify",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="messages; '-' or none: stdin")
    p.add_argument("--sender", help="envelope sender (MAIL FROM) when piped from an MTA")
    p.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="envelope recipient (the VERP address); repeatable",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    p.set_defaults(func=cmd_ingest)

    p = add_parser(fsub, "classify", "print what intake would conclude; changes nothing")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    p.set_defaults(func=cmd_classify)

    p = add_parser(fsub, "list", "recent feedback events")
    p.add_argument("--customer", metavar="NAME")
    p.add_argument("--kind", choices=["bounce", "complaint", "unsubscribe", "auto-reply", "delay", "other"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = add_parser(fsub, "show", "one feedback event (with --raw: the stored message)")
    p.add_argument("id", type=int)
    p.add_argument("--raw", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)


def codec_of(config: Config, *, required: bool = True) -> Any:
    """The mail ID codec from the configured key file; never creates the file (that is
    `gateway serve`'s job, as the service user)."""
    from gateway.mailid import MailIdCodec, MailIdKeyError

    try:
        return MailIdCodec.from_key_file(config.path(config.mail_id.key_file), create=False)
    except MailIdKeyError as exc:
        if required:
            raise CliError(str(exc)) from None
        print(f"gateway: {exc}; mail IDs cannot be verified", file=sys.stderr)
        return None


def _log_to_gateway_log(config: Config) -> None:
    """Events of CLI intake go to the gateway's log file like the listener's, so `grep
    MAIL-ID` finds them; without a log file (stdout) they stay out of the command's output."""
    from gateway.logging import setup_logging

    if not config.logging.file:
        return
    try:
        setup_logging(config.path(config.logging.file), config.logging.level, 0, config.logging.backup_count)
    except OSError as exc:
        print(f"gateway: cannot write the log file ({exc.strerror}); events not logged", file=sys.stderr)


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise CliError(f"{name}: {exc.strerror}") from None


def describe_id(check: Any) -> str:
    if check.mail_id is None:
        return "none found"
    d = check.decoded
    if check.status == "genuine" and d is not None:
        stamp = d.timestamp.strftime("%Y-%m-%d %H:%M:%S UTC") if d.timestamp else "-"
        how = f", found by {check.attribution}" if check.attribution else ""
        return (
            f"{check.mail_id} (genuine: customer id {d.customer_id}, campaign ref "
            f"{d.campaign_ref or '-'}, sent {stamp}{how})"
        )
    from gateway.cli.mailid import STATUS_MEANING

    if check.status in ("forged", "altered"):
        return f"{check.mail_id} ({STATUS_MEANING[check.status]}; not acted on)"
    return f"{check.mail_id} ({check.status})"


def cmd_classify(args: argparse.Namespace) -> int:
    from gateway.feedback.intake import conclude

    config = load_config(getattr(args, "config", None))
    codec = codec_of(config, required=False)
    for name in args.files:
        conclusion = conclude(_read(name), config, codec)
        if args.json:
            print(json.dumps(conclusion.json_dict(name), sort_keys=False))
            continue
        a = conclusion.analysis
        print(name)
        print(f"  kind:        {a.kind}")
        print(f"  recipients:  {', '.join(a.recipients) or '-'}")
        print(f"  class:       {a.bounce_class}")
        print(f"  status:      {a.status or '-'}")
        print(f"  reason:      {a.reason or '-'}")
        if a.feedback_type:
            print(f"  report type: {a.feedback_type}")
        print(f"  mail ID:     {describe_id(conclusion.check)}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from gateway.feedback.intake import Intake
    from gateway.store import StoreUnavailable

    try:
        config, store = store_of(args)
    except StoreUnavailable as exc:
        print(f"gateway: the store is unavailable ({exc}); try again later", file=sys.stderr)
        return EX_TEMPFAIL
    _log_to_gateway_log(config)
    intake = Intake(config, store, codec_of(config))
    names = args.files or ["-"]
    for name in names:
        raw = _read(name)
        try:
            result = intake.ingest(
                raw, source="ingest", envelope_from=args.sender, envelope_to=args.recipient
            )
        except StoreUnavailable as exc:
            print(f"gateway: {name}: the store is unavailable ({exc}); try again later", file=sys.stderr)
            return EX_TEMPFAIL
        if args.json:
            out = result.conclusion.json_dict(name)
            out.update(event=result.event.id, action=result.event.action, customer=result.customer_name)
            print(json.dumps(out))
            continue
        e = result.event
        what = e.kind
        if e.kind == "bounce":
            what += f" ({e.bounce_class}{', ' + e.status if e.status else ''})"
        print(f"{name}: #{e.id} {what}; mail ID {describe_id(result.check)}")
        print(
            f"  customer: {result.customer_name or '-'}; campaign: {result.campaign or '-'}; "
            f"recipient: {e.recipient or '-'}"
        )
        print(f"  action: {e.action or '-'}")
    return 0


def _event_dict(e: Any, names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": e.id,
        "received_at": when(e.received_at),
        "source": e.source,
        "kind": e.kind,
        "class": e.bounce_class,
        "status": e.status,
        "reason": e.reason,
        "feedback_type": e.feedback_type,
        "recipients": e.recipients,
        "recipient": e.recipient,
        "mail_id": e.mail_id,
        "mail_id_status": e.mail_id_status,
        "attribution": e.attribution,
        "customer": names.get(e.customer_id) if e.customer_id else None,
        "campaign_id": e.campaign_id,
        "acted": e.acted,
        "action": e.action,
        "envelope_from": e.envelope_from,
        "envelope_to": e.envelope_to,
        "size": e.raw_size,
        "truncated": e.raw_truncated,
    }


def cmd_list(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer_id = store.require_customer(args.customer).id if args.customer else None
    events = store.list_feedback_events(customer_id=customer_id, kind=args.kind, limit=args.limit)
    names = {c.id: c.name for c in store.list_customers()}
    if args.json:
        print_json([_event_dict(e, names) for e in events])
        return 0
    if not events:
        print("no feedback events")
        return 0
    for e in events:
        print(
            f"#{e.id:<6} {when(e.received_at)}  {e.kind:<11} {e.bounce_class:<19} "
            f"{e.mail_id_status:<9} {names.get(e.customer_id or 0, '-'):<14} "
            f"{e.recipient or '-':<30} {e.action or '-'}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    event = store.get_feedback_event(args.id)
    if event is None:
        raise CliError(f"no feedback event #{args.id}")
    if args.raw:
        sys.stdout.buffer.write(store.get_feedback_raw(args.id) or b"")
        return 0
    names = {c.id: c.name for c in store.list_customers()}
    info = _event_dict(event, names)
    info["details"] = event.details
    if args.json:
        print_json(info)
        return 0
    for key, value in info.items():
        if key != "details":
            print(f"{key + ':':<16} {value if value not in (None, '', []) else '-'}")
    print("details:")
    print("  " + json.dumps(event.details, indent=2, sort_keys=True, default=str).replace("\n", "\n  "))
    return 0
