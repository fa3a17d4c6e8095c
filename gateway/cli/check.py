"""`gateway check FILE.eml --customer NAME`: run a message through the gateway offline.

The check uses the very engine the SMTP listener uses (`gateway.server.build_engine`, then
`Engine.mail`, `Engine.rcpt` per recipient, `Engine.data`), with the config's policies, modes
and order, the store named in the config, and a session of the customer as if it had logged in.
What it leaves out, and why:

* Nothing is relayed: the engine only prepares the bytes; relaying is the transport's job and
  `check` never calls it (nor `Engine.relayed`).
* No ledger row: a check is not a send, so the engine runs with its ledger switched off.
* DKIM is reported apart from the policies. The engine signs as its last step; without a key
  for the From domain and `dkim.missing_key: tempfail` it answers 451 4.3.5 however compliant
  the message is. `check` reports that as "dkim: would tempfail" and judges the policies;
  `--dkim-strict` counts it as the tempfail the server would answer.
* Line endings: files on disk often have LF line ends; they are turned into CRLF first, as an
  SMTP client would send them. A bare CR (not followed by LF) is left in place and reported:
  the gateway refuses such messages (SMTP smuggling protection), and so does the check.
* The limits aiosmtpd enforces before the engine sees the message (limits.max_message_size,
  limits.max_line_length) are checked here too, with the same replies.
* One recipient per transaction (limits.max_recipients): when the engine answers 452 4.5.3 to a
  further RCPT, the check starts a new transaction for the remaining recipients, as an RFC 5321
  client does.

Exit status: 0 every transaction passed, 1 something was rejected (5xx), 2 something was
temporarily refused (4xx) and nothing rejected, 3 the check could not run (unknown customer,
unreadable file, broken config).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any

from gateway.cli import CliError
from gateway.cli.common import add_parser

if TYPE_CHECKING:
    from gateway.core.plan import Edit

EXIT_PASS, EXIT_REJECT, EXIT_TEMPFAIL, EXIT_ERROR = 0, 1, 2, 3
_RESULTS = {"pass": EXIT_PASS, "reject": EXIT_REJECT, "tempfail": EXIT_TEMPFAIL}
_STRICTNESS = {"pass": 0, "tempfail": 1, "reject": 2}

_LONE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")


def register(sub: Any) -> None:
    p = add_parser(
        sub,
        "check",
        "run a message file through the configured policies offline (nothing is relayed)",
        epilog="Exit status: 0 pass, 1 reject, 2 tempfail, 3 the check could not run. "
        "Mail from defaults to the From address, recipients to the To addresses.",
    )
    p.add_argument("file", metavar="FILE.eml", help="the message (RFC 5322); '-' reads stdin")
    p.add_argument(
        "--customer",
        required=True,
        metavar="NAME",
        help="the customer the message is sent as (its SMTP login)",
    )
    p.add_argument("--mail-from", metavar="ADDR", help="envelope sender (default: the From address)")
    p.add_argument(
        "--rcpt",
        metavar="ADDR",
        action="append",
        default=[],
        help="envelope recipient, repeatable (default: the To addresses)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--dkim-strict",
        action="store_true",
        help="count a message the gateway cannot DKIM-sign (no key and "
        "dkim.missing_key: tempfail) as the tempfail the server would answer",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="also write the engine's log lines (logfmt) to stderr"
    )
    p.set_defaults(func=cmd_check)


# -- input ------------------------------------------------------------------------------------
def normalize_line_endings(raw: bytes) -> tuple[bytes, int, int]:
    """(data with every lone LF made CRLF and a final CRLF, lone LFs converted, bare CRs left)."""
    converted = len(_LONE_LF.findall(raw))
    data = _LONE_LF.sub(b"\r\n", raw)
    bare_cr = len(_BARE_CR.findall(data))
    if data and not data.endswith(b"\r\n") and not data.endswith(b"\r"):
        data += b"\r\n"  # DATA always ends with CRLF before the final dot
    return data, converted, bare_cr


def header_addresses(raw: bytes, name: str) -> list[str]:
    from gateway.core.message import header_values

    return [addr for _, addr in getaddresses(header_values(raw, name)) if "@" in addr]


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None


def _transport_limits(raw: bytes, limits: Any) -> tuple[Any, str] | None:
    """What aiosmtpd answers before the engine sees the message, if a limit is exceeded."""
    from gateway.core import replies

    if len(raw) > limits.max_message_size:
        return replies.MESSAGE_TOO_BIG, (
            f"{len(raw)} bytes > limits.max_message_size {limits.max_message_size}"
        )
    for number, line in enumerate(raw.split(b"\r\n"), start=1):
        # On the wire: the line, CRLF, and a transparency dot if it starts with one.
        wire = len(line) + 2 + (1 if line.startswith(b".") else 0)
        if wire > limits.max_line_length:
            return replies.LINE_TOO_LONG, (
                f"line {number} is {len(line)} octets; limits.max_line_length is {limits.max_line_length}"
            )
    return None


# -- the engine, minus relay, ledger and DKIM verdict -------------------------------------------
class DkimProbe:
    """Stands in for the engine's signer: signs like it, but reports instead of failing.

    Same interface as gateway.signing.MessageSigner: `signature(data) -> (fields, info)`.
    """

    def __init__(self, signer: Any, missing_key: str) -> None:
        self.signer = signer
        self.missing_key = missing_key
        self.reset()

    def reset(self) -> None:
        self.result = "not reached"
        self.detail = ""
        self.reply: Any = None

    def signature(self, data: bytes) -> tuple[bytes, dict[str, Any]]:
        from gateway.core import replies
        from gateway.core.signer import SigningUnavailable

        try:
            signature, info = self.signer.signature(data)
        except SigningUnavailable as exc:
            self.result, self.reply = "would tempfail", replies.POLICY_ERROR
            self.detail = f"{exc} (dkim.missing_key: {self.missing_key})"
            return b"", {"result": "check: would tempfail", "reason": self.detail}
        except Exception as exc:  # noqa: BLE001 - the server would answer 451 for it
            self.result, self.reply = "error", replies.INTERNAL_ERROR
            self.detail = f"signing failed: {type(exc).__name__}: {exc}"
            return b"", {"result": "check: error", "reason": self.detail}
        self._describe(data, signature, info)
        return signature, info

    def _describe(self, data: bytes, signature: bytes, info: dict[str, Any]) -> None:
        from gateway.signing import from_domain

        if not signature:
            domain = from_domain(data) or "(none)"
            self.result = "unsigned"
            self.detail = (
                f"no DKIM key for From domain {domain}; relayed unsigned "
                f"(dkim.missing_key: {self.missing_key})"
            )
            return
        self.result, self.detail = "signed", info.get("signatures", "")


@contextmanager
def _engine_logs(verbose: bool) -> Iterator[None]:
    """The engine's event lines go to stderr with -v, else nowhere (stdout is the report)."""
    from gateway.logging import LOGGER_NAME, LogfmtFormatter

    logger = logging.getLogger(LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if verbose else logging.NullHandler()
    handler.setFormatter(LogfmtFormatter())
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO if verbose else logging.CRITICAL)
    try:
        yield
    finally:
        logger.handlers, logger.level, logger.propagate = saved


def _classify(reply: Any) -> str:
    if 200 <= reply.code < 300:
        return "pass"
    return "reject" if reply.code >= 500 else "tempfail"


def _decision(phase: str, d: Any, rcpt: str | None = None) -> dict[str, Any]:
    return {
        "phase": phase,
        "rcpt": rcpt,
        "policy": d.policy,
        "mode": d.mode,
        "action": d.verdict.action.name.lower(),
        "effective": d.effective.name.lower(),
        "reply": str(d.verdict.reply) if d.verdict.reply else None,
        "reason": d.verdict.reason or None,
        "error": bool(d.error),
        "seconds": round(d.seconds, 6),
    }


async def _run(
    engine: Any,
    session: Any,
    mail_from: str,
    recipients: list[str],
    raw: bytes,
    probe: DkimProbe | None,
    dkim_strict: bool,
) -> list[dict[str, Any]]:
    from gateway.core import replies
    from gateway.core.transaction import Phase

    transactions: list[dict[str, Any]] = []
    pending = list(recipients)
    while pending:
        t: dict[str, Any] = {
            "index": len(transactions) + 1,
            "mail_id": None,
            "recipients": [],
            "refused_recipients": [],
            "not_tried": [],
            "steps": [],
            "decisions": [],
            "dkim": {"result": "not reached", "detail": None},
            "headers": None,
            "result": None,
            "reply": None,
        }
        transactions.append(t)
        txn, outcome = await engine.mail(session, mail_from)
        t["mail_id"] = txn.mail_id
        t["steps"].append({"command": f"MAIL FROM:<{mail_from}>", "reply": str(outcome.reply)})
        t["decisions"] += [_decision(Phase.MAIL.value, d) for d in outcome.decisions]
        if not outcome.ok:
            t["result"], t["reply"] = _classify(outcome.reply), str(outcome.reply)
            t["not_tried"] = list(pending)  # MAIL was refused: no RCPT follows
            break
        results: list[tuple[str, Any]] = []
        while pending:
            rcpt = pending[0]
            out = await engine.rcpt(txn, rcpt)
            if out.reply == replies.TOO_MANY_RECIPIENTS and txn.recipients:
                break  # the client sends the rest in a new transaction
            pending.pop(0)
            t["steps"].append({"command": f"RCPT TO:<{rcpt}>", "reply": str(out.reply)})
            t["decisions"] += [_decision(Phase.RCPT.value, d, rcpt) for d in out.decisions]
            if out.ok:
                t["recipients"].append(rcpt)
            else:
                t["refused_recipients"].append(rcpt)
                results.append((_classify(out.reply), out.reply))
        if not txn.recipients:
            t["steps"].append({"command": "DATA", "reply": "(not sent: no recipient accepted)"})
            result, reply = max(results, key=lambda r: _STRICTNESS[r[0]])
            t["result"], t["reply"] = result, str(reply)
            continue
        limit = _transport_limits(raw, engine.config.limits)
        if limit is not None:
            reply, why = limit
            t["steps"].append({"command": "DATA", "reply": str(reply), "note": why})
            results.append((_classify(reply), reply))
        else:
            if probe is not None:
                probe.reset()
            out = await engine.data(txn, raw)
            t["mail_id"] = txn.mail_id
            t["steps"].append({"command": "DATA", "reply": str(out.reply)})
            t["decisions"] += [_decision(Phase.DATA.value, d) for d in out.decisions]
            results.append((_classify(out.reply), out.reply))
            if out.ok:
                t["headers"] = _header_changes(txn.raw, out.edits)
            if probe is None:
                t["dkim"] = {"result": "disabled", "detail": "dkim.enabled: false"}
            elif out.ok:
                t["dkim"] = {"result": probe.result, "detail": probe.detail or None}
                if probe.reply is not None:
                    t["dkim"]["reply"] = str(probe.reply)
                    if dkim_strict:
                        results.append((_classify(probe.reply), probe.reply))
        result, reply = max(results, key=lambda r: _STRICTNESS[r[0]])
        t["result"], t["reply"] = result, str(reply)
    return transactions


def _header_changes(raw: bytes, edits: Sequence[Edit]) -> dict[str, list[str]]:
    """The header fields the gateway removes from the message (in message order, as the client
    wrote them) and the ones it adds (top first), as the relay and the milter apply them."""
    from gateway.core.plan import added_on_top, removed_fields

    return {"removed": removed_fields(raw, edits), "added": [edit.name for edit in added_on_top(edits)]}


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    from gateway import dnsverify
    from gateway.cli.common import store_of
    from gateway.core.transaction import SessionInfo
    from gateway.server import build_engine

    original = _read(args.file)
    raw, converted, bare_cr = normalize_line_endings(original)
    config, store = store_of(args)
    customer = store.require_customer(args.customer)
    mail_from = args.mail_from
    if mail_from is None:
        senders = header_addresses(raw, "From")
        if not senders:
            raise CliError(f"{args.file}: no From address; give --mail-from ADDR")
        mail_from = senders[0]
    recipients = list(args.rcpt) or header_addresses(raw, "To")
    if not recipients:
        raise CliError(f"{args.file}: no To address; give --rcpt ADDR")
    notes: list[str] = []
    if converted:
        notes.append(f"{converted} LF line endings converted to CRLF")
    if bare_cr:
        notes.append(
            f"the file has {bare_cr} bare CR (a CR not followed by LF); the gateway "
            "refuses such messages (550 5.6.0, SMTP smuggling protection)"
        )
    try:
        resolver = dnsverify.resolver_from_env()
    except dnsverify.DnsConfigError as exc:
        raise CliError(str(exc)) from None
    engine = build_engine(config, store, resolver=resolver)
    engine.ledger = False
    probe = None
    if engine.signer is not None:
        probe = DkimProbe(engine.signer, config.dkim.missing_key)
        engine.signer = probe
    session = SessionInfo(id="check", customer=customer, transport="check")
    with _engine_logs(args.verbose):
        transactions = asyncio.run(_run(engine, session, mail_from, recipients, raw, probe, args.dkim_strict))
    warnings = []
    for t in transactions:
        dkim = t["dkim"]
        if dkim.get("reply") and not args.dkim_strict:
            warnings.append(
                f"transaction {t['index']}: the server would answer {dkim['reply']}: "
                f"{dkim['detail']}; the policies' result stands (--dkim-strict "
                "counts it)"
            )
    worst = max(transactions, key=lambda t: _STRICTNESS[t["result"]])
    final = worst if worst["result"] != "pass" else transactions[-1]
    return {
        "file": args.file,
        "customer": customer.name,
        "customer_status": customer.status,
        "mail_from": mail_from,
        "recipients": recipients,
        "input": {"bytes": len(original), "lf_converted": converted, "bare_cr": bare_cr},
        "notes": notes,
        "warnings": warnings,
        "transactions": transactions,
        "result": worst["result"],
        "reply": final["reply"],
        "exit_status": _RESULTS[worst["result"]],
        "relayed": False,
    }


# -- output -----------------------------------------------------------------------------------
def _print_text(report: dict[str, Any]) -> None:
    print(
        f"check {report['file']} as customer {report['customer']} "
        f"({report['customer_status']}); nothing is relayed, no ledger row is written"
    )
    for note in report["notes"]:
        print(f"note: {note}")
    for t in report["transactions"]:
        print(f"transaction {t['index']}  mail id {t['mail_id']}")
        by_step: dict[str, list[dict[str, Any]]] = {}
        for d in t["decisions"]:
            key = (
                "MAIL" if d["phase"] == "mail" else (f"RCPT {d['rcpt']}" if d["phase"] == "rcpt" else "DATA")
            )
            by_step.setdefault(key, []).append(d)
        for step in t["steps"]:
            command = step["command"]
            print(f"  {command:<44} -> {step['reply']}")
            if step.get("note"):
                print(f"      {step['note']}")
            key = (
                "MAIL"
                if command.startswith("MAIL")
                else f"RCPT {command[9:-1]}"
                if command.startswith("RCPT")
                else "DATA"
            )
            for d in by_step.pop(key, []):
                action = d["action"]
                if d["mode"] == "monitor" and action != "continue":
                    action = f"would-{action}"
                line = f"    {d['phase']:<5} {d['policy']:<22} {d['mode']:<8} {action:<14}"
                if d["reply"]:
                    line += f" {d['reply']}"
                print(line.rstrip())
                if d["reason"]:
                    print(f"          reason: {d['reason']}{' (policy error)' if d['error'] else ''}")
        if t["headers"] is not None:
            removed, added = t["headers"]["removed"], t["headers"]["added"]
            print(f"  headers removed: {', '.join(removed) if removed else 'none'}")
            print(f"  headers added: {', '.join(added) if added else 'none'}")
        dkim = t["dkim"]
        if dkim["result"] != "not reached":
            print(f"  dkim: {dkim['result']}" + (f": {dkim['detail']}" if dkim["detail"] else ""))
        if t["refused_recipients"]:
            print(f"  refused recipients: {', '.join(t['refused_recipients'])}")
        if t["not_tried"]:
            print(f"  recipients not tried (MAIL refused): {', '.join(t['not_tried'])}")
        print(f"  transaction result: {t['result']} ({t['reply']})")
    print(f"result: {report['result']} ({report['reply']})")
    for warning in report["warnings"]:
        print(f"warning: {warning}")


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError
    from gateway.core.pipeline import PipelineError
    from gateway.core.registry import RegistryError
    from gateway.dkim import DkimError
    from gateway.mailid import MailIdError, MailIdKeyError
    from gateway.store import StoreError, StoreUnavailable

    try:
        report = run_check(args)
    except (
        CliError,
        ConfigError,
        StoreError,
        PipelineError,
        RegistryError,
        DkimError,
        MailIdError,
        MailIdKeyError,
    ) as exc:
        print(f"gateway: cannot check: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except StoreUnavailable as exc:
        print(f"gateway: cannot check: the store is unavailable: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        _print_text(report)
    return int(report["exit_status"])
