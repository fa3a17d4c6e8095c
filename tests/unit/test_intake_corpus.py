"""Every report of shared/corpora/complaints goes through the intake and lands in the store.

As they come (third-party mail, no mail ID of ours) they are stored with their parse and raw
copy and not acted on. With one of our genuine mail IDs put into the reported original (the
way our mail carries X-Mailing-ID), each complaint is attributed to customer and campaign and
suppresses the recipient for that customer; not-spam / auth-failure reports are recorded and
not acted on; opt-out reports unsubscribe.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_intake_support import IntakeEnv

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "complaints"
# Reports without an original to put our ID into: not applicable to attribution.
NO_ORIGINAL = {"arf-25.eml", "arf-26.eml"}

# The corpus is part of the workspace (../shared): missing means broken, not skipped.
assert CORPUS.is_dir(), f"corpus not found at {CORPUS}"


def _cases() -> list[tuple[str, str, str]]:
    if not CORPUS.is_dir():
        return []
    cases: dict[tuple[str, str], str] = {}
    for item in json.loads((CORPUS / "sisimai" / "labels.json").read_text()):
        cases.setdefault(("sisimai", item["file"]), item["feedback_type"])
    for item in json.loads((CORPUS / "email_arf_perl" / "labels.json").read_text()):
        cases[("email_arf_perl", item["file"])] = item["feedback-type"]
    for name in ("aol.eml", "yahoo.eml"):
        cases[("flanker", name)] = "abuse"
    found = {(p.parent.name, p.name) for p in CORPUS.glob("*/*") if p.suffix in (".eml", ".msg")}
    assert found == set(cases), "every report in the corpus has a label"
    return [(folder, name, ftype) for (folder, name), ftype in sorted(cases.items())]


def _expected_kind(feedback_type: str) -> str:
    if feedback_type in ("not-spam", "auth-failure"):
        return "other"
    if feedback_type == "opt-out":
        return "unsubscribe"
    return "complaint"


def with_mail_id(raw: bytes, mail_id: str) -> bytes:
    """Put `X-Mailing-ID: <id>` into the reported original: before its Subject line (the last
    Subject of the file; the report's own comes first)."""
    subjects = list(re.finditer(rb"^Subject:", raw, re.M | re.I))
    assert subjects, "every report with an original quotes its Subject"
    at = subjects[-1].start()
    eol = b"\r\n" if b"\r\n" in raw else b"\n"
    return raw[:at] + b"X-Mailing-ID: " + mail_id.encode() + eol + raw[at:]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IntakeEnv]:
    env = IntakeEnv(tmp_path_factory.mktemp("corpus"))
    yield env
    env.store.close()


@pytest.mark.parametrize(("folder", "name", "feedback_type"), _cases())
def test_report_as_received_is_stored_not_acted_on(
    env: IntakeEnv, folder: str, name: str, feedback_type: str
) -> None:
    raw = (CORPUS / folder / name).read_bytes()
    result = env.ingest(raw, source="corpus")
    event = env.store.get_feedback_event(result.event.id)
    assert event.kind == _expected_kind(feedback_type)
    assert event.feedback_type == feedback_type
    assert event.mail_id_status in ("none", "malformed", "altered")  # nothing of ours in there
    assert not event.acted and event.customer_id is None
    assert env.store.get_feedback_raw(event.id) == raw and event.raw_size == len(raw)
    assert env.store.list_suppressions(address=event.recipient or "nobody@x") == []


@pytest.mark.parametrize(
    ("folder", "name", "feedback_type"), [c for c in _cases() if c[1] not in NO_ORIGINAL]
)
def test_report_about_our_mail_is_attributed_and_acted_on(
    env: IntakeEnv, folder: str, name: str, feedback_type: str
) -> None:
    rcpt = f"rcpt-{folder}-{Path(name).stem}@example.org"
    mail_id = env.send(rcpt)
    raw = with_mail_id((CORPUS / folder / name).read_bytes(), mail_id)
    result = env.ingest(raw, source="corpus")
    event = env.store.get_feedback_event(result.event.id)
    kind = _expected_kind(feedback_type)
    assert (event.kind, event.mail_id, event.mail_id_status) == (kind, mail_id, "genuine")
    assert event.customer_id == env.customer.id and event.campaign_id == env.campaign.id
    suppression = env.store.get_suppression(env.customer.id, rcpt)
    if kind == "other":
        assert not event.acted and suppression is None
        return
    # The reports name their own (made-up) recipients; the ID's recipient is ours, from the
    # ledger row of that mail ID.
    assert event.acted and event.recipient == rcpt
    assert suppression is not None and suppression.mail_id == mail_id
    assert suppression.reason == ("unsubscribe" if kind == "unsubscribe" else "complaint")
    assert env.store.find_suppression(0, rcpt) is None, "complaints are per customer"


def test_complaint_rate_counts_each_complaint_once(tmp_path: Path) -> None:
    env = IntakeEnv(tmp_path)
    complaints = 0
    for folder, name, feedback_type in _cases():
        if name in NO_ORIGINAL:
            continue
        mail_id = env.send(f"r-{Path(name).stem}@example.org")
        raw = with_mail_id((CORPUS / folder / name).read_bytes(), mail_id)
        for _ in range(2):  # the same report twice: counted once
            env.ingest(raw, source="corpus")
        complaints += _expected_kind(feedback_type) == "complaint"
    assert env.store.count_complaints(env.customer.id, 0) == complaints > 10
    env.store.close()
