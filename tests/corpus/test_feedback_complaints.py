"""Complaint reports in shared/corpora/complaints parse as their upstream labels say.

* sisimai/: standard ARF (AOL, Yahoo, SendGrid, Hotmail-ARF, a 7-recipient report), DMARC
  auth-failure reports (arf-18..20, not complaints), Microsoft JMRP-style forwards as
  message/rfc822 (arf-22..24) and Apple Mail's unsubscribe mail (arf-26, labelled opt-out).
* email_arf_perl/: the RFC 5965 examples.
* flanker/: real AOL and Yahoo FBL reports (both abuse).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.feedback.classify import analyze

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "complaints"
NOT_COMPLAINTS = {"not-spam", "auth-failure"}
# Reports that carry no original to take headers from, and why.
NO_ORIGINAL = {
    "arf-25.eml": "the reporter replaced the original by the word REDACTED",
    "arf-26.eml": "Apple's unsubscribe mail is a new message, it quotes nothing",
}

# The corpus is part of the workspace (../shared): missing means broken, not skipped.
assert CORPUS.is_dir(), f"corpus not found at {CORPUS}"


def _cases() -> list[tuple[str, str, str]]:
    """(folder, file, expected feedback type)."""
    if not CORPUS.is_dir():
        return []
    cases: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for item in json.loads((CORPUS / "sisimai" / "labels.json").read_text()):
        if item["file"] not in seen:  # one row per complaining recipient: one case per file
            seen.add(item["file"])
            cases.append(("sisimai", item["file"], item["feedback_type"]))
    for item in json.loads((CORPUS / "email_arf_perl" / "labels.json").read_text()):
        cases.append(("email_arf_perl", item["file"], item["feedback-type"]))
    for name in ("aol.eml", "yahoo.eml"):
        cases.append(("flanker", name, "abuse"))
    return cases


@pytest.mark.parametrize(("folder", "name", "feedback_type"), _cases())
def test_report_parses_as_labelled(folder: str, name: str, feedback_type: str) -> None:
    analysis = analyze((CORPUS / folder / name).read_bytes())
    assert analysis.feedback_type == feedback_type
    assert analysis.bounce_class == "none"
    if feedback_type in NOT_COMPLAINTS:
        assert analysis.kind == "other", "auth-failure / not-spam reports are not complaints"
        assert "not a complaint" in analysis.reason
    else:
        assert analysis.kind == "complaint"
    if name not in NO_ORIGINAL:
        assert analysis.original_headers.get("From"), analysis
        assert analysis.original_headers.get("Subject") or analysis.original_headers.get("Date")


@pytest.mark.parametrize("name", ["arf-22.eml", "arf-23.eml", "arf-24.eml"])
def test_jmrp_forward_is_a_complaint_with_the_recipient(name: str) -> None:
    analysis = analyze((CORPUS / "sisimai" / name).read_bytes())
    assert analysis.kind == "complaint"
    assert analysis.source == "jmrp"
    assert analysis.recipients == ["kijitora@example.com"]  # from X-HmXmrOriginalRecipient
    assert analysis.original_headers["Subject"] == "Nyaan"


def test_multi_recipient_arf_lists_every_recipient() -> None:
    analysis = analyze((CORPUS / "sisimai" / "arf-16.eml").read_bytes())
    assert analysis.kind == "complaint"
    assert len(analysis.recipients) == 7


def test_arf_original_mail_from_and_rcpt_to() -> None:
    analysis = analyze((CORPUS / "email_arf_perl" / "example2.msg").read_bytes())
    assert analysis.recipients == ["user@example.com"]
    assert analysis.original_headers["Subject"] == "Earn money"


def test_summary() -> None:
    cases = _cases()
    kinds: dict[str, int] = {}
    for folder, name, _ in cases:
        kind = analyze((CORPUS / folder / name).read_bytes()).kind
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"\n[feedback] complaint corpus: {len(cases)} reports -> {kinds}")
    assert sum(kinds.values()) == len(cases)
