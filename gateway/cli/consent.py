"""`gateway consent import | show | export | revoke | api-key | rotate-token-key`: double opt-in
evidence (RULES.md "Double opt-in evidence").

`import FILE --customer NAME` reads CSV (comma or semicolon, UTF-8 with or without BOM) or
JSON (a list of objects, or {"records": [...]}) with the columns

    email, source, subscribed_at, subscribed_ip, confirmed_at, confirmed_ip
    [, confirmation_sent_at, subscribed_user_agent, confirmed_user_agent, list]

Times are ISO 8601 (without an offset: UTC) or unix seconds. A row without confirmed_at is
imported as a pending subscription. Every row that cannot be evidence is reported with its line
and why (bad email, bad timestamp, confirmed before subscribed, bad IP, missing source,
duplicate in the file or already recorded for the customer) and not imported; the good rows are
imported in one transaction (none with --dry-run). An import never changes an existing record:
a revoked consent stays revoked. Exit status 0 when every row was good, 1 otherwise.

`export ADDRESS --customer NAME` prints the evidence for the CSA complaints office: the
customer (with imprint), the record and every event of its history (--json: the same as JSON).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, config_of, print_json, store_of
from gateway.store.consent import (
    ConsentImportRow,
    ConsentInputError,
    check_email,
    check_ip,
    iso,
    parse_timestamp,
)

COLUMNS = (
    "email",
    "source",
    "subscribed_at",
    "subscribed_ip",
    "confirmed_at",
    "confirmed_ip",
    "confirmation_sent_at",
    "subscribed_user_agent",
    "confirmed_user_agent",
    "list",
)
REQUIRED = ("email", "subscribed_at", "subscribed_ip")
ALIASES = {
    "e-mail": "email",
    "e_mail": "email",
    "email_address": "email",
    "address": "email",
    "mail": "email",
    "list_name": "list",
}


def register(sub: Any) -> None:
    group = sub.add_parser("consent", help="double opt-in evidence (import, show, export)")
    csub = group.add_subparsers(dest="consent_command", metavar="ACTION")
    csub.required = True

    p = add_parser(csub, "import", "import consent records from CSV or JSON; reports bad rows")
    p.add_argument("file", metavar="FILE", help="CSV or JSON file; '-' for stdin")
    p.add_argument("--customer", metavar="NAME", required=True)
    p.add_argument("--source", help="source for rows without one (form URL, list name)")
    p.add_argument("--format", choices=["csv", "json"], help="default: from the file name (.json), else CSV")
    p.add_argument("--dry-run", action="store_true", help="check and report, import nothing")
    p.add_argument("--rejects", metavar="FILE", help="write the rejected rows as CSV with a 'problem' column")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_import)

    p = add_parser(csub, "show", "the consent record of one address")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--customer", metavar="NAME", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = add_parser(csub, "export", "the evidence of one address for the CSA complaints office")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--customer", metavar="NAME", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_export)

    p = add_parser(csub, "revoke", "revoke a consent (the recipient withdrew it)")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--customer", metavar="NAME", required=True)
    p.add_argument("--reason", default="revoked by support")
    p.add_argument(
        "--by", metavar="WHO", help="who revokes it (audit trail; default: the operating-system user)"
    )
    p.set_defaults(func=cmd_revoke)

    p = add_parser(csub, "api-key", "API keys of the consent API")
    ksub = p.add_subparsers(dest="api_key_command", metavar="ACTION")
    ksub.required = True
    k = add_parser(ksub, "add", "make a key for a customer (shown once)")
    k.add_argument("name", metavar="NAME", help="the customer")
    k.add_argument("--comment", default="", help="what the key is for")
    k.set_defaults(func=cmd_key_add)
    k = add_parser(ksub, "list", "list the keys (fingerprints only)")
    k.set_defaults(func=cmd_key_list)
    k = add_parser(ksub, "remove", "remove a customer's keys")
    k.add_argument("name", metavar="NAME", help="the customer")
    k.add_argument("--fingerprint", help="only the key with this fingerprint")
    k.set_defaults(func=cmd_key_remove)

    p = add_parser(
        csub, "rotate-token-key", "append a new URL token key that signs from now on (old links keep working)"
    )
    p.set_defaults(func=cmd_rotate_token_key)


# -- import ---------------------------------------------------------------------------------


@dataclass
class Rejected:
    where: str
    email: str
    problems: list[str]
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return f"{self.where} ({self.email or 'no email'}): {'; '.join(self.problems)}"


def _column(name: str) -> str:
    key = name.strip().lower().replace(" ", "_")
    return ALIASES.get(key, key)


def read_rows(data: bytes, fmt: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """[(where, row)], columns; CliError for a file that is not a table at all."""
    if fmt == "json":
        try:
            parsed = json.loads(data.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CliError(f"not valid JSON: {exc}") from None
        if isinstance(parsed, dict) and isinstance(parsed.get("records"), list):
            parsed = parsed["records"]
        if not isinstance(parsed, list):
            raise CliError('JSON input must be a list of objects or {"records": [...]}')
        rows: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for i, item in enumerate(parsed, 1):
            if not isinstance(item, dict):
                rows.append((f"record {i}", {"__invalid__": True}))
                continue
            entry = {_column(str(k)): v for k, v in item.items()}
            seen.update(entry)
            rows.append((f"record {i}", entry))
        return rows, sorted(seen)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CliError("the CSV file is not UTF-8") from None
    sample = text[:8192]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise CliError("the file is empty") from None
    columns = [_column(h) for h in header]
    table: list[tuple[str, dict[str, Any]]] = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        row: dict[str, Any] = dict(zip(columns, values, strict=False))
        if len(values) != len(columns):
            row["__width__"] = len(values)
        table.append((f"line {reader.line_num}", row))
    return table, columns


class _Row:
    """One row being checked: values by column, and the problems found so far."""

    def __init__(self, row: dict[str, Any], now: float | None) -> None:
        self.row = row
        self.now = now
        self.problems: list[str] = []

    def value(self, name: str) -> Any:
        v = self.row.get(name)
        return v.strip() if isinstance(v, str) else v

    def get(self, name: str, check: Any, category: str, required: bool) -> Any:
        v = self.value(name)
        if v is None or v == "":
            if required:
                self.problems.append(f"{category} ({name}): missing")
            return None
        try:
            return check(v)
        except ConsentInputError as exc:
            self.problems.append(f"{category} ({name}): {exc}")
            return None

    def time(self, name: str, required: bool) -> float | None:
        return self.get(name, lambda v: parse_timestamp(v, now=self.now), "bad timestamp", required)

    def text(self, name: str, limit: int) -> str | None:
        v = self.value(name)
        return str(v)[:limit] if v not in (None, "") else None


def check_rows(
    rows: list[tuple[str, dict[str, Any]]],
    *,
    default_source: str | None = None,
    existing: dict[str, Any] | None = None,
    now: float | None = None,
) -> tuple[list[ConsentImportRow], list[Rejected]]:
    """Validate rows: (good rows, rejected rows with every problem each has)."""
    good: list[ConsentImportRow] = []
    rejected: list[Rejected] = []
    seen: dict[str, str] = {}
    existing = existing or {}
    for where, row in rows:
        if row.get("__invalid__"):
            rejected.append(Rejected(where, "", ["not an object"], {}))
            continue
        r = _Row(row, now)
        raw_email = row.get("email")
        email_text = str(raw_email).strip() if raw_email is not None else ""
        if "__width__" in row:
            width = row.pop("__width__")
            r.problems.append(f"bad row: {width} fields, the header has {len(row)}")
        address = r.get("email", check_email, "bad email", True)
        if address is not None:
            if address in seen:
                r.problems.append(f"duplicate: the same address as {seen[address]}")
            elif address in existing:
                record = existing[address]
                r.problems.append(
                    f"duplicate: already recorded for this customer "
                    f"({record.status}, subscribed {iso(record.subscribed_at)})"
                )
            else:
                seen[address] = where
        source = r.value("source") or default_source
        if not source:
            r.problems.append(
                "missing source: give the form URL or import batch (column source, or --source)"
            )
        subscribed = r.time("subscribed_at", True)
        subscribed_ip = r.get("subscribed_ip", check_ip, "bad IP", True)
        confirmed = r.time("confirmed_at", False)
        confirmed_ip = r.get("confirmed_ip", check_ip, "bad IP", confirmed is not None)
        if r.value("confirmed_at") in (None, "") and confirmed_ip:
            r.problems.append("bad timestamp (confirmed_at): missing, but confirmed_ip is given")
        sent = r.time("confirmation_sent_at", False)
        if subscribed is not None and confirmed is not None and confirmed < subscribed:
            r.problems.append(f"confirmed before subscribed ({iso(confirmed)} < {iso(subscribed)})")
        if sent is not None and subscribed is not None and sent < subscribed:
            r.problems.append("bad timestamp (confirmation_sent_at): before subscribed_at")
        if sent is not None and confirmed is not None and sent > confirmed:
            r.problems.append("bad timestamp (confirmation_sent_at): after confirmed_at")
        if r.problems or address is None or subscribed is None or subscribed_ip is None:
            rejected.append(Rejected(where, email_text, r.problems or ["incomplete"], row))
            continue
        good.append(
            ConsentImportRow(
                line=_line_no(where),
                address=address,
                source=str(source)[:1000],
                subscribed_at=subscribed,
                subscribed_ip=subscribed_ip,
                confirmed_at=confirmed,
                confirmed_ip=confirmed_ip,
                confirmation_sent_at=sent,
                subscribed_user_agent=r.text("subscribed_user_agent", 500),
                confirmed_user_agent=r.text("confirmed_user_agent", 500),
                list_name=r.text("list", 200),
                original=dict(row),
            )
        )
    return good, rejected


def _line_no(where: str) -> int:
    tail = where.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None


def cmd_import(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = store.require_customer(args.customer)
    data = _read_input(args.file)
    fmt = args.format or ("json" if args.file.lower().endswith((".json", ".jsonl")) else "csv")
    rows, columns = read_rows(data, fmt)
    missing = [c for c in REQUIRED if c not in columns]
    if "source" not in columns and not args.source:
        missing.append("source (or --source)")
    if rows and missing and fmt == "csv":
        raise CliError(
            f"{args.file}: missing columns: {', '.join(missing)} (found: {', '.join(columns) or 'none'})"
        )
    candidates = [str(r.get("email", "")) for _, r in rows if r.get("email")]
    existing_addresses = []
    for c in candidates:
        try:
            existing_addresses.append(check_email(c))
        except ConsentInputError:
            pass
    existing = store.consent_records_for(customer.id, existing_addresses)
    good, rejected = check_rows(rows, default_source=args.source, existing=existing)
    batch = f"import:{Path(args.file).name if args.file != '-' else 'stdin'}:{iso(time.time())}"
    imported: list[ConsentImportRow] = []
    if not args.dry_run and good:
        imported, raced = store.import_consent(customer.id, good, batch=batch, via=f"import:{_actor()}")
        for row in raced:
            rejected.append(
                Rejected(
                    f"line {row.line}",
                    row.address,
                    ["duplicate: recorded for this customer meanwhile"],
                    row.original,
                )
            )
    if args.rejects:
        _write_rejects(args.rejects, rejected)
    report = {
        "file": args.file,
        "customer": customer.name,
        "batch": None if args.dry_run else batch,
        "rows": len(rows),
        "valid": len(good),
        "imported": 0 if args.dry_run else len(imported),
        "dry_run": args.dry_run,
        "rejected": [{"where": r.where, "email": r.email, "problems": r.problems} for r in rejected],
    }
    if args.json:
        print_json(report)
    else:
        verb = "would import" if args.dry_run else "imported"
        count = len(good) if args.dry_run else len(imported)
        print(
            f"{args.file}: {len(rows)} rows for {customer.name}: {verb} {count}, "
            f"rejected {len(rejected)}" + ("" if args.dry_run else f" (batch {batch})")
        )
        for r in rejected:
            print(f"  {r.text}")
    return 1 if rejected else 0


def _write_rejects(path: str, rejected: list[Rejected]) -> None:
    names = list(COLUMNS)
    for r in rejected:
        for k in r.row:
            if k not in names and not k.startswith("__"):
                names.append(k)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["where", *names, "problem"], lineterminator="\r\n", extrasaction="ignore"
        )
        writer.writeheader()
        for r in rejected:
            writer.writerow(
                {"where": r.where, **{k: r.row.get(k, "") for k in names}, "problem": "; ".join(r.problems)}
            )


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "cli"


# -- show / export / revoke -----------------------------------------------------------------

FIELDS = (
    ("status", "status"),
    ("source", "source"),
    ("list", "list"),
    ("subscribed_at", "subscribed"),
    ("subscribed_ip", "  from IP"),
    ("subscribed_user_agent", "  user agent"),
    ("confirmation_sent_at", "confirmation sent"),
    ("confirmed_at", "confirmed"),
    ("confirmed_ip", "  from IP"),
    ("confirmed_user_agent", "  user agent"),
    ("revoked_at", "revoked"),
    ("revoked_reason", "  reason"),
    ("recorded_via", "recorded via"),
    ("import_batch", "import batch"),
)


def _evidence_lines(evidence: dict[str, Any]) -> list[str]:
    lines = []
    for key, label in FIELDS:
        value = evidence.get(key)
        if key == "revoked_at" and value is None:
            value = "no"
        if value is None and key in ("list", "import_batch", "revoked_reason"):
            continue
        lines.append(f"{label + ':':<22} {value if value is not None else '-'}")
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = store.require_customer(args.customer)
    address = _address(args.address)
    evidence = store.consent_evidence(customer.id, address)
    suppression = store.find_suppression(customer.id, address)
    if args.json:
        print_json(
            {
                "customer": customer.name,
                "address": address,
                "consent": evidence,
                "suppressed": None
                if suppression is None
                else {
                    "reason": suppression.reason,
                    "since": iso(suppression.created_at),
                    "scope": "global" if suppression.is_global else "customer",
                },
            }
        )
        return 0 if evidence else 1
    if evidence is None:
        print(f"{address}: no consent record for {customer.name}")
        return 1
    print(f"{address} ({customer.name})")
    for line in _evidence_lines(evidence):
        print(f"  {line}")
    if suppression is not None:
        print(
            f"  {'suppressed:':<22} {suppression.reason} since {iso(suppression.created_at)} "
            f"({'global' if suppression.is_global else 'this customer'})"
        )
    passes = evidence["status"] == "confirmed"
    print(f"  {'policy consent:':<22} {'passes' if passes else 'refuses'}")
    return 0


def _address(value: str) -> str:
    try:
        return check_email(value)
    except ConsentInputError as exc:
        raise CliError(f"{value}: {exc}") from None


def export_text(export: dict[str, Any], hostname: str) -> str:
    out = ["Double opt-in evidence", "======================", ""]
    c = export.get("customer") or {}
    imprint = c.get("imprint") or {}
    company = " ".join(v for v in (imprint.get("company"), imprint.get("legal_form")) if v)
    where = ", ".join(
        v
        for v in (
            imprint.get("street"),
            " ".join(x for x in (imprint.get("postcode"), imprint.get("city")) if x),
            imprint.get("country"),
        )
        if v
    )
    out.append(f"{'customer:':<22} {c.get('name', '-')}" + (f" ({company})" if company else ""))
    if where:
        out.append(f"{'':<22} {where}")
    for key in ("email", "phone", "register_court", "register_number"):
        if imprint.get(key):
            out.append(f"{'':<22} {key.replace('_', ' ')}: {imprint[key]}")
    consent = export["consent"]
    out.append(f"{'address:':<22} {consent['address']}")
    out.extend(_evidence_lines(consent))
    out.append("")
    out.append("History (UTC)")
    out.append("-------------")
    for h in export["history"]:
        parts = [h["at"], h["event"]]
        if h.get("ip"):
            parts.append(f"ip {h['ip']}")
        if h.get("source"):
            parts.append(f"source {h['source']}")
        if h.get("via"):
            parts.append(f"via {h['via']}")
        detail = h.get("detail") or {}
        if detail.get("result"):
            parts.append(f"result {detail['result']}")
        if detail.get("reason"):
            parts.append(f"reason {detail['reason']}")
        if detail.get("batch"):
            parts.append(f"batch {detail['batch']}")
        if detail.get("origin_check"):
            # The confirmation page's check that the POST came from our page (gateway.http.origin)
            parts.append(f"origin check {detail['origin_check']}, page nonce {detail.get('page_nonce', '-')}")
        out.append("  " + ", ".join(str(p) for p in parts))
        if h.get("user_agent"):
            out.append(f"    user agent: {h['user_agent']}")
    out.append("")
    out.append(f"Exported {export['exported_at']} by the ESP policy gateway {hostname}.")
    return "\n".join(out) + "\n"


def cmd_export(args: argparse.Namespace) -> int:
    config, store = store_of(args)
    customer = store.require_customer(args.customer)
    address = _address(args.address)
    export = store.consent_export(customer.id, address)
    if export is None:
        raise CliError(f"{address}: no consent record for {customer.name}")
    text = (
        json.dumps(export, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        if args.json
        else export_text(export, config.hostname)
    )
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"evidence for {address} written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = store.require_customer(args.customer)
    address = _address(args.address)
    actor = (args.by or "").strip() or f"cli:{_actor()}"
    record, changed = store.consent_revoke(customer.id, address, reason=args.reason, via=actor)
    if changed:
        store.audit(
            customer,
            "consent-revoked",
            actor,
            args.reason,
            {"address": address, "consent": "confirmed"},
            {"address": address, "consent": "revoked"},
        )
    if record is None:
        raise CliError(f"{address}: no consent record for {customer.name}")
    print(f"{address}: consent {'revoked' if changed else 'was already revoked'} ({customer.name})")
    return 0


# -- keys -----------------------------------------------------------------------------------


def cmd_key_add(args: argparse.Namespace) -> int:
    from gateway.http.apikeys import add_key

    config, store = store_of(args)
    customer = store.require_customer(args.name)
    path = config.path(config.http.api_keys_file)
    key, entry = add_key(path, customer.name, args.comment)
    print(key)
    print(
        f"API key for {customer.name} added to {path} (fingerprint {entry.fingerprint}); "
        "it is shown only now",
        file=sys.stderr,
    )
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    from gateway.http.apikeys import ApiKeyError, read_keys

    config = config_of(args)
    path = config.path(config.http.api_keys_file)
    try:
        keys = read_keys(path)
    except ApiKeyError as exc:
        raise CliError(str(exc)) from None
    if not keys:
        print(f"no API keys in {path}")
        return 0
    for k in keys:
        print(f"{k.customer:<24} {k.fingerprint}  {k.comment}".rstrip())
    return 0


def cmd_key_remove(args: argparse.Namespace) -> int:
    from gateway.http.apikeys import remove_keys

    config = config_of(args)
    path = config.path(config.http.api_keys_file)
    removed = remove_keys(path, args.name, args.fingerprint)
    if not removed:
        raise CliError(f"no matching API key of {args.name} in {path}")
    for k in removed:
        print(f"removed API key {k.fingerprint} of {k.customer}")
    return 0


def cmd_rotate_token_key(args: argparse.Namespace) -> int:
    from gateway.urltokens import TokenKeyError, add_key, create_key_file

    config = config_of(args)
    path = config.path(config.http.token_key_file)
    try:
        if not path.exists():
            create_key_file(path)
            print(f"created {path}")
            return 0
        key_id = add_key(path)
    except TokenKeyError as exc:
        raise CliError(str(exc)) from None
    print(f"key {key_id} appended to {path}; it signs new links from now on (reloads itself)")
    return 0
