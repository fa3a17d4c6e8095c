"""campaign-confirmed: X-Campaign-ID must name a campaign confirmed for this customer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.campaign_confirmed import CampaignConfirmed
from tests.unit.test_policy_support import Env, fixture, reply_of, set_header


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from Env.session(tmp_path)


MISSING = (
    "550 5.7.1 Header X-Campaign-ID is missing; tag each mail with the ID of a campaign "
    "whose guideline confirmation you recorded"
)
NOT_CONFIRMED = (
    "550 5.7.1 Campaign {} has no guideline confirmation; confirm the anti-spam "
    "guidelines for this campaign before sending it"
)


@pytest.mark.parametrize(
    "values, expected",
    [
        (["spring-2026"], None),
        ([" spring-2026 "], None),
        (["spring-2026", "spring-2026"], None),
        ([], MISSING),
        ([""], MISSING),
        (["summer-2026"], NOT_CONFIRMED.format("summer-2026")),
        (["SPRING-2026"], NOT_CONFIRMED.format("SPRING-2026")),
        (
            ["spring-2026", "summer-2026"],
            "550 5.7.1 Several different X-Campaign-ID headers; send exactly one per mail",
        ),
        (["x" * 100], NOT_CONFIRMED.format("x" * 64 + "...")),
        (["a b\tc"], NOT_CONFIRMED.format("a?b?c")),
    ],
)
def test_campaign_header(env: Env, values: list[str], expected: str | None) -> None:
    raw = set_header(fixture("reference_newsletter.eml"), "X-Campaign-ID", *values)
    assert reply_of(env.check(CampaignConfirmed(), raw)) == expected


def test_campaign_of_another_customer_is_not_confirmed(env: Env) -> None:
    env.store.add_customer("other", status="active")
    env.store.confirm_campaign("other", "autumn", by="x")
    raw = set_header(fixture("reference_newsletter.eml"), "X-Campaign-ID", "autumn")
    assert reply_of(env.check(CampaignConfirmed(), raw)) == NOT_CONFIRMED.format("autumn")


def test_pass_reason_names_the_confirmation(env: Env) -> None:
    verdict = env.check(CampaignConfirmed(), fixture("reference_newsletter.eml"))
    assert verdict.passed and "spring-2026" in verdict.reason and "jane@shop.example" in verdict.reason


def test_no_customer(env: Env) -> None:
    verdict = env.check(CampaignConfirmed(), fixture("reference_newsletter.eml"), customer=None)
    assert reply_of(verdict) == "530 5.7.0 Authentication required"
