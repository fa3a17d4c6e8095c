"""The engine's plan (gateway.core.plan): rendered by the proxy, mapped to milter actions.

The rendering must give the bytes the engine relayed before it returned a plan (remove the
fields, prepend the gateway's headers, DKIM-sign the result and prepend the signature), on
every newsletter of the shared corpus and every fixture; the milter must turn each edit into
actions of one kind that make Postfix's header block what the proxy relays.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.config import Config, PolicyEntry
from gateway.core import replies
from gateway.core.message import (
    crlf_only,
    header_values,
    prepend,
    prepend_headers,
    remove_headers,
)
from gateway.core.pipeline import Pipeline
from gateway.core.plan import (
    AddHeader,
    ChangeSender,
    Edit,
    Plan,
    RemoveHeader,
    added_on_top,
    fields_to_add,
    present,
    removed_fields,
    render,
)
from gateway.core.policy import Policy, PolicyContext
from gateway.core.registry import discover
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import HeaderMutation, Reply, Verdict
from gateway.dkim import (
    ED25519_SHA256,
    RSA_SHA256,
    DkimError,
    DkimSigner,
    KeyRing,
    SigningKey,
    static_dnsfunc,
    verify,
)
from gateway.engine import GATEWAY_ONLY_HEADERS, Engine
from gateway.mailid import MailIdCodec
from gateway.managed_unsubscribe import HEADERS as MANAGED_HEADERS
from gateway.signing import MessageSigner
from gateway.transports.milter import (
    INSERT_BASE,
    SMFIR_CHGFROM,
    SMFIR_CHGHEADER,
    SMFIR_INSHEADER,
    edit_packets,
    rebuild_message,
)
from tests.unit.test_policy_support import CORPORA, Env, crlf, fixture

NOW = 1_767_225_600  # a fixed signing time: the same message signs to the same bytes
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REMOVED = ["X-Mailing-ID", *GATEWAY_ONLY_HEADERS, *MANAGED_HEADERS]
ADDED = [
    ("X-Mailing-ID", "m1abc"),
    ("Feedback-ID", "spring:acme:newsletter:esp"),
    ("CFBL-Address", "fbl@esp.example; report=arf"),
    ("CFBL-Feedback-ID", "m1abc"),
    ("List-Unsubscribe", "<https://esp.example/u/tok>"),
    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
]
# What a client might send in the gateway's place: repeated, in another case, folded.
FORGED = (
    b"X-Mailing-ID: forged\r\n"
    b"feedback-id: a:b:c:\r\n\tfolded-onto-a-second-line\r\n"
    b"x-mailing-id: forged again\r\n"
)


def corpus_messages() -> list[Path]:
    newsletters = sorted(
        p for p in (CORPORA / "newsletters").rglob("*") if p.is_file() and not p.name.startswith("LICENSE")
    )
    fixtures = sorted(p for p in FIXTURES.rglob("*.eml") if "bounces" not in p.parts)
    assert len(newsletters) > 10 and len(fixtures) > 20, "corpus or fixtures missing"
    return newsletters + fixtures


@pytest.fixture(scope="module")
def keys() -> list[SigningKey]:
    return [
        SigningKey(
            "shop.example", "s1", RSA_SHA256, rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
        SigningKey("shop.example", "e1", ED25519_SHA256, ed25519.Ed25519PrivateKey.generate()),
    ]


@pytest.fixture(scope="module")
def dkim_signer(keys: list[SigningKey]) -> DkimSigner:
    return DkimSigner(KeyRing(tuple(keys)), clock=lambda: NOW)


def old_path(raw: bytes, removed: Sequence[str], added: Sequence[tuple[str, str]], sign: object) -> bytes:
    """How the engine made the relayed bytes before plans (engine._stamp, then the signer)."""
    data = prepend_headers(remove_headers(raw, removed), added)
    signature = sign(data)  # type: ignore[operator]
    return prepend(signature, data) if signature else data


def plan_edits(
    raw: bytes, removed: Sequence[str], added: Sequence[tuple[str, str]], sign: object
) -> list[Edit]:
    """The edits as the engine plans them: removals, additions, DKIM over what they make."""
    edits: list[Edit] = [*present(raw, removed), *(AddHeader(name, value) for name, value in reversed(added))]
    signature = sign(render(raw, edits))  # type: ignore[operator]
    return edits + fields_to_add(signature)


@pytest.mark.parametrize("path", corpus_messages(), ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("forged", [False, True], ids=["as-sent", "forged-headers"])
def test_rendering_the_plan_gives_the_bytes_the_old_path_relayed(
    path: Path, forged: bool, dkim_signer: DkimSigner, keys: list[SigningKey]
) -> None:
    raw = crlf(path.read_bytes())
    if forged:
        raw = FORGED + raw
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"

    def sign(data: bytes) -> bytes:
        try:
            return dkim_signer.sign(data, keys)
        except DkimError:  # no From header: the old path would not have signed either
            return b""

    expected = old_path(raw, REMOVED, ADDED, sign)
    edits = plan_edits(raw, REMOVED, ADDED, sign)
    assert render(raw, edits) == expected
    if forged:
        assert removed_fields(raw, edits)[:3] == ["X-Mailing-ID", "feedback-id", "x-mailing-id"]
    assert [e.name for e in added_on_top(edits)][-len(ADDED) :] == [n for n, _ in ADDED]


def test_a_plan_without_edits_relays_the_client_bytes_themselves() -> None:
    raw = fixture("reference_newsletter.eml")
    assert render(raw, []) is raw
    assert render(raw, present(raw, ["X-Not-There"])) is raw


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from Env.session(tmp_path)


def test_the_engine_plans_the_old_bytes_and_the_signature_verifies_on_the_rendering(
    env: Env, dkim_signer: DkimSigner, keys: list[SigningKey]
) -> None:
    config = Config(policies=[PolicyEntry(name="customer-active")], bounce_domain="bounces.esp.example")
    signer = MessageSigner(
        dkim_signer, algorithms=[RSA_SHA256, ED25519_SHA256], esp_domain=None, missing_key="tempfail"
    )
    engine = Engine(
        config,
        env.store,
        Pipeline.from_config(config.policies, discover()),
        codec=MailIdCodec({0: b"k" * 32}, 0),
        signer=signer,
        ledger=False,
    )
    raw = FORGED + fixture("reference_newsletter.eml")

    async def session() -> tuple[Plan, object]:
        txn, _ = await engine.mail(env.txn().session, "bounce@shop.example")
        await engine.rcpt(txn, "kunde@example.org")
        return await engine.data(txn, raw), txn

    plan, txn = asyncio.run(session())
    assert plan.ok and str(plan.reply) == "250 2.0.0 OK"
    relayed = render(raw, plan.edits)
    removed = [config.mail_id.header, *GATEWAY_ONLY_HEADERS]
    assert relayed == old_path(
        raw,
        removed,
        engine.added_headers(txn),  # type: ignore[arg-type]
        lambda data: dkim_signer.sign(data, keys),
    )
    mail_id = txn.mail_id  # type: ignore[attr-defined]
    assert header_values(relayed, "X-Mailing-ID") == [mail_id]
    assert plan.envelope_sender == f"m-{mail_id}@bounces.esp.example"
    assert plan.edits[-1] == ChangeSender(plan.envelope_sender)
    assert [e.name for e in plan.edits if isinstance(e, AddHeader)][-2:] == ["DKIM-Signature"] * 2
    dns = static_dnsfunc({f"{k.selector}._domainkey.{k.domain}": k.txt_record for k in keys})
    results = verify(relayed, dns, now=NOW + 60)
    assert [(r.selector, r.ok) for r in results] == [("s1", True), ("e1", True)]


class Injecting(Policy):
    """A policy that copies text with a line break into a header it adds."""

    name = "test-injecting"
    phases = (Phase.DATA,)
    description = "adds a header with a line break in its value"

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        return Verdict.ok("noted", mutations=(HeaderMutation("X-Note", "fine\r\nBcc: everyone@example.org"),))


def test_a_policy_header_that_would_inject_a_field_is_never_relayed(env: Env) -> None:
    config = Config(policies=[PolicyEntry(name="test-injecting")])
    pipe = Pipeline.from_config(config.policies, discover(extra=[Injecting]))
    engine = Engine(config, env.store, pipe, codec=MailIdCodec({0: b"k" * 32}, 0), ledger=False)

    async def session() -> Plan:
        txn, _ = await engine.mail(env.txn().session, "bounce@shop.example")
        await engine.rcpt(txn, "kunde@example.org")
        return await engine.data(txn, fixture("reference_newsletter.eml"))

    plan = asyncio.run(session())
    assert not plan.ok and plan.reply == replies.POLICY_ERROR
    assert plan.edits == ()


# -- the milter: each edit, actions of one kind ----------------------------------------------

HEADERS = [
    (b"X-Mailing-ID", b" forged"),
    (b"From", b" News <news@shop.example>"),
    (b"Subject", b" a long subject\n\tfolded onto a second line"),
    (b"x-mailing-id", b" forged again"),
    (b"X-Mailing-ID-Extra", b" not the same name"),
    (b"X-MAILING-ID", b" and a third"),
    (b"To", b" kunde@example.org"),
]


def unpack(packet: bytes) -> tuple[bytes, bytes]:
    (length,) = struct.unpack("!I", packet[:4])
    assert length == len(packet) - 4
    return packet[4:5], packet[5:]


def test_removing_a_repeated_header_is_one_change_per_field_last_first() -> None:
    out = edit_packets([RemoveHeader("X-Mailing-ID")], HEADERS, leading_space=True)
    assert [unpack(p) for p in out] == [
        (SMFIR_CHGHEADER, b"\0\0\0\x03X-MAILING-ID\0\0"),
        (SMFIR_CHGHEADER, b"\0\0\0\x02x-mailing-id\0\0"),
        (SMFIR_CHGHEADER, b"\0\0\0\x01X-Mailing-ID\0\0"),
    ]


def test_removing_a_folded_header_is_exactly_one_change() -> None:
    out = edit_packets([RemoveHeader("subject")], HEADERS, leading_space=True)
    assert [unpack(p) for p in out] == [(SMFIR_CHGHEADER, b"\0\0\0\x01Subject\0\0")]
    assert edit_packets([RemoveHeader("Feedback-ID")], HEADERS, leading_space=True) == []


@pytest.mark.parametrize("leading_space", [True, False])
def test_adding_a_header_is_one_insert_below_postfixs_received(leading_space: bool) -> None:
    edit = AddHeader("DKIM-Signature", "v=1; a=rsa-sha256;\r\n\tb=abc")
    out = edit_packets([edit], HEADERS, leading_space=leading_space)
    value = (b" " if leading_space else b"") + b"v=1; a=rsa-sha256;\n\tb=abc"
    assert [unpack(p) for p in out] == [
        (SMFIR_INSHEADER, struct.pack("!I", INSERT_BASE) + b"DKIM-Signature\0" + value + b"\0")
    ]


def test_changing_the_sender_is_one_chgfrom() -> None:
    out = edit_packets([ChangeSender("m-abc@bounces.esp.example")], HEADERS, leading_space=True)
    assert [unpack(p) for p in out] == [(SMFIR_CHGFROM, b"<m-abc@bounces.esp.example>\0")]


def postfix_applies(headers: list[tuple[bytes, bytes]], packets: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The header list after Postfix applied the actions (its Received: hidden at the top:
    insert index 0 is above it, 1 right below it; change indexes count per name, from 1)."""
    fields: list[tuple[bytes, bytes] | None] = [None, *headers]  # None: Postfix's Received:
    for p in packets:
        cmd, data = unpack(p)
        (index,) = struct.unpack("!I", data[:4])
        name, value, _ = data[4:].split(b"\0")
        if cmd == SMFIR_INSHEADER:
            fields.insert(index, (name, value))
        elif cmd == SMFIR_CHGHEADER:
            same = [i for i, f in enumerate(fields) if f is not None and f[0].lower() == name.lower()]
            assert value == b"" and 1 <= index <= len(same)
            del fields[same[index - 1]]
    return [f for f in fields if f is not None]


@pytest.mark.parametrize("leading_space", [True, False])
def test_postfix_applying_the_actions_delivers_the_header_block_the_proxy_relays(
    leading_space: bool, dkim_signer: DkimSigner, keys: list[SigningKey]
) -> None:
    headers = HEADERS if leading_space else [(n, v[1:]) for n, v in HEADERS]
    raw = rebuild_message(headers, b"Hello\r\n", leading_space=leading_space)
    edits = plan_edits(raw, REMOVED, ADDED, lambda data: dkim_signer.sign(data, keys))
    edits.append(ChangeSender("m-abc@bounces.esp.example"))
    out = edit_packets(edits, headers, leading_space=leading_space)
    kinds = {RemoveHeader: SMFIR_CHGHEADER, AddHeader: SMFIR_INSHEADER, ChangeSender: SMFIR_CHGFROM}
    # One action per edit, but a removal: one per field of the name (here three X-Mailing-ID).
    assert [unpack(p)[0] for p in out] == [SMFIR_CHGHEADER] * 3 + [
        kinds[type(e)] for e in edits if not isinstance(e, RemoveHeader)
    ]
    delivered = rebuild_message(postfix_applies(headers, out[:-1]), b"Hello\r\n", leading_space=leading_space)
    assert delivered == render(raw, edits)


# -- what a plan refuses to carry ------------------------------------------------------------


@pytest.mark.parametrize("value", ["a\r\nX-Injected: yes", "a\nb", "a\rb", "a\r\n", "a\x00b"])
def test_an_added_value_cannot_start_another_field_or_end_a_milter_string(value: str) -> None:
    with pytest.raises(ValueError):
        AddHeader("X-Test", value)


@pytest.mark.parametrize("name", ["X Test", "X-Test:", "", "Bcc\r\nX"])
def test_a_header_name_is_a_field_name(name: str) -> None:
    with pytest.raises(ValueError):
        AddHeader(name, "v")
    with pytest.raises(ValueError):
        RemoveHeader(name)


@pytest.mark.parametrize("address", ["a@b\r\nRCPT TO:<x@y>", "a@b>", "a\x00@b"])
def test_a_changed_sender_is_one_address(address: str) -> None:
    with pytest.raises(ValueError):
        ChangeSender(address)


def test_removals_come_before_additions() -> None:
    with pytest.raises(ValueError):
        Plan(Reply(250, "2.0.0", "OK"), (AddHeader("X-A", "1"), RemoveHeader("X-A")))


def test_signature_fields_become_additions_top_first() -> None:
    block = b"DKIM-Signature: v=1; d=a;\r\n\tb=x\r\nDKIM-Signature: v=1; d=b; b=y\r\n"
    edits = fields_to_add(block)
    assert edits == [
        AddHeader("DKIM-Signature", "v=1; d=b; b=y"),
        AddHeader("DKIM-Signature", "v=1; d=a;\r\n\tb=x"),
    ]
    assert render(b"From: a@b\r\n\r\nx\r\n", edits) == block + b"From: a@b\r\n\r\nx\r\n"
    with pytest.raises(ValueError):
        fields_to_add(b"DKIM-Signature:v=1\r\n")


# -- the relay's bare-line-ending check, carried over from the client's bytes ----------------

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# Mostly CRLF lines, now and then a bare CR or LF: clean and unclean inputs both come up often.
_TOKENS = st.sampled_from([b"a", b"b:", b"\r\n", b"\r\n", b"\r\n", b"\r", b"\n"])
_LINES = st.lists(_TOKENS, max_size=12).map(b"".join)


@given(_LINES, _LINES.map(lambda b: b + b"\r\n"), st.integers(min_value=0, max_value=30))
@example(b"a\r\n", b"x\r\n", 2)  # cut between a CR and its LF: the LF is bare after the join
def test_a_rendering_is_never_taken_for_clean_when_it_is_not(body: bytes, prefix: bytes, start: int) -> None:
    # The relay sends without escaping what crlf_only calls clean (SMTP smuggling otherwise).
    start = min(start, len(body))
    crlf_only(body)  # the engine checked the client's bytes; the rendering builds on them
    joined = prepend(prefix, body, start)
    assert joined == prefix + body[start:]
    assert crlf_only(joined) is (_BARE.search(joined) is None)


def test_rendering_with_removals_keeps_a_bare_line_ending_in_the_body_visible() -> None:
    raw = b"X-Mailing-ID: a\r\nFrom: a@b\r\n\r\nline\nsmuggled\r\n"
    assert not crlf_only(raw)
    rendered = render(raw, [RemoveHeader("X-Mailing-ID"), AddHeader("X-Mailing-ID", "b")])
    assert rendered == b"X-Mailing-ID: b\r\nFrom: a@b\r\n\r\nline\nsmuggled\r\n"
    assert not crlf_only(rendered)
