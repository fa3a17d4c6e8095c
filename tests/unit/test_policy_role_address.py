"""role-address: role and general inboxes refused at RCPT, with a text naming the rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.core.transaction import Phase
from policies.role_address import DEFAULT_ROLES, RoleAddress
from tests.unit.test_policy_support import Env, reply_of


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from Env.session(tmp_path)


ROLE = "550 5.7.1 {} is a role address; role addresses may not receive campaigns"


@pytest.mark.parametrize(
    "rcpt, expected",
    [
        ("sales@example.org", ROLE.format("sales@example.org")),
        ("Sales@Example.org", ROLE.format("Sales@Example.org")),
        ("<webmaster@example.org>", ROLE.format("webmaster@example.org")),
        ("info+newsletter@example.org", ROLE.format("info+newsletter@example.org")),
        ("NO-REPLY@example.org", ROLE.format("NO-REPLY@example.org")),
        ('"postmaster"@example.org', ROLE.format('"postmaster"@example.org')),
        ("kontakt@firma.example", ROLE.format("kontakt@firma.example")),
        ("buchhaltung@firma.example", ROLE.format("buchhaltung@firma.example")),
        ("undisclosed-recipients@example.org", ROLE.format("undisclosed-recipients@example.org")),
        # people, and role words that are only part of a local part
        ("jane.doe@example.org", None),
        ("salesforce-fan@example.org", None),
        ("info.mueller@example.org", None),
        ("jane+sales@example.org", None),
        ("admin@", ROLE.format("admin@")),
    ],
)
def test_default_list(env: Env, rcpt: str, expected: str | None) -> None:
    verdict = env.check(RoleAddress(), phase=Phase.RCPT, rcpt=rcpt)
    assert reply_of(verdict) == expected


@pytest.mark.parametrize(
    "options, rcpt, refused",
    [
        ({"add": ["Newsletter"]}, "newsletter@example.org", True),
        ({"add": ["newsletter"]}, "jane@example.org", False),
        ({"remove": ["INFO"]}, "info@example.org", False),
        ({"remove": ["info"]}, "sales@example.org", True),
        ({"add": ["x"], "remove": ["x"]}, "x@example.org", False),
    ],
)
def test_options_add_and_remove(env: Env, options: dict, rcpt: str, refused: bool) -> None:
    policy = RoleAddress(RoleAddress.Options.model_validate(options))
    verdict = env.check(policy, phase=Phase.RCPT, rcpt=rcpt)
    assert (reply_of(verdict) is not None) is refused


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValidationError):
        RoleAddress.Options.model_validate({"additional": ["x"]})


# RULES.md "Role addresses", written out word for word: the default list must be exactly this
# (a typo or a missing entry in the policy's list fails here).
RULES_ROLE_ADDRESSES = """
    abuse admin administrator billing bounce compliance devnull dns ftp hostmaster info inoc
    ispfeedback ispsupport list list-request listserv mailer-daemon maildaemon majordomo
    marketing news noc nobody noreply no-reply null phish phishing postmaster privacy registrar
    root sales security spam spamtrap support sysadmin tech undisclosed-recipients unsubscribe
    usenet uucp webmaster www
    office contact kontakt hello team service help helpdesk enquiries inquiries feedback press
    presse jobs careers hr orders bestellung buchhaltung einkauf verkauf vertrieb sekretariat
    verwaltung vorstand zentrale
""".split()


# shared/ lies beside the checkout (in CI too, like the corpora tests/conftest.py reads).
RULES_MD = Path(__file__).resolve().parents[3] / "shared" / "RULES.md"


def roles_in_rules_md(text: str) -> list[str]:
    """The words of the "Role addresses" rule, from "Default hard list:" to "The list is"."""
    rule = text[text.index("**Role addresses**") :]
    listed = rule[
        rule.index("Default hard list:") + len("Default hard list:") : rule.index("The list is config")
    ]
    listed = listed.replace("; plus the common general inboxes:", " ")
    return [word.strip(".;,") for word in listed.split()]


def test_rules_list_is_complete() -> None:
    assert len(RULES_ROLE_ADDRESSES) == len(set(RULES_ROLE_ADDRESSES)) == 72
    assert set(DEFAULT_ROLES) == set(RULES_ROLE_ADDRESSES)


def test_written_out_list_is_the_one_in_rules_md() -> None:
    assert RULES_MD.is_file(), f"RULES.md not found at {RULES_MD}"
    assert roles_in_rules_md(RULES_MD.read_text()) == RULES_ROLE_ADDRESSES


@pytest.mark.parametrize("role", RULES_ROLE_ADDRESSES)
def test_every_listed_role_is_refused(env: Env, role: str) -> None:
    rcpt = f"{role.upper()}+x@example.org"
    verdict = env.check(RoleAddress(), phase=Phase.RCPT, rcpt=rcpt)
    assert reply_of(verdict) == ROLE.format(rcpt)


def test_no_customer_still_checks(env: Env) -> None:
    verdict = env.check(RoleAddress(), phase=Phase.RCPT, rcpt="abuse@example.org", customer=None)
    assert reply_of(verdict) == ROLE.format("abuse@example.org")


def test_no_recipient_passes(env: Env) -> None:
    assert reply_of(env.check(RoleAddress(), phase=Phase.RCPT, rcpt=None)) is None
