"""sender-identity: the sender is not disguised (RULES.md "Sender not disguised", §6 Abs. 2 DDG):
envelope sender, From, Sender and Reply-To lie in the customer's verified sending domains."""

from __future__ import annotations

import functools

import dns.exception
import dns.resolver
from pydantic import BaseModel, ConfigDict

from gateway.core.policy import Declaration, Policy, PolicyContext, Touches
from gateway.core.resolver import Resolver
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict
from gateway.mime.addresses import (
    display_name_disguise,
    domain_of,
    is_subdomain_or_same,
    local_part_disguise,
    parse_mailbox,
)
from policies._text import shown

NOT_VERIFIED = "{what} domain {domain} is not a verified sending domain of your account"


class SenderIdentity(Policy):
    name = "sender-identity"
    phases = (Phase.MAIL, Phase.DATA)
    description = "envelope sender, From, Sender and Reply-To are in the customer's verified domains"
    touches: Declaration = Touches.STORE_CACHED  # the customer's verified domains

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        require_dmarc: bool = False  # needs ctx.resolver; skipped without one

    options: Options

    def __init__(self, options: BaseModel | None = None) -> None:
        super().__init__(options)
        if self.options.require_dmarc:
            # The DMARC record is looked up in the DNS at DATA.
            self.touches = {
                Phase.MAIL: Touches.STORE_CACHED,
                Phase.DATA: Touches.STORE_CACHED | Touches.NETWORK,
            }

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        if txn.customer is None:
            return Verdict.reject(
                "Authentication required",
                "no customer: sender domains not checkable",
                code=530,
                enhanced="5.7.0",
            )
        verified = ctx.store.verified_domains(txn.customer.id)
        if ctx.phase is Phase.MAIL:
            return self._envelope(txn.mail_from.strip().strip("<>"), verified)
        return self._headers(txn, verified, ctx)

    def _envelope(self, mail_from: str, verified: set[str]) -> Verdict:
        domain = domain_of(mail_from)
        if not domain:
            return Verdict.reject(
                "An empty envelope sender is not accepted; use an address in one "
                "of your verified sending domains",
                f"envelope sender {mail_from!r}",
            )
        if not _covered(domain, verified):
            return Verdict.reject(
                NOT_VERIFIED.format(what="Envelope sender", domain=shown(domain)),
                f"envelope domain {domain} not in verified {sorted(verified)}",
            )
        # The envelope sender is shown too, as the Return-Path of the delivered message.
        refused = _disguised("envelope sender", "", mail_from, verified)
        if refused:
            return refused
        return Verdict.ok(f"envelope domain {domain} is verified")

    def _headers(self, txn: Transaction, verified: set[str], ctx: PolicyContext) -> Verdict:
        froms = txn.headers("From")
        mailboxes = [p for v in froms for p in _mailboxes(v)]
        if len(froms) != 1 or len(mailboxes) != 1 or not domain_of(mailboxes[0][1]):
            return Verdict.reject(
                "The message must have exactly one From address (found "
                f"{sum(1 for _, a in mailboxes if '@' in a)})",
                f"{len(froms)} From headers, mailboxes {mailboxes}",
            )
        name, address = mailboxes[0]
        domain = domain_of(address)
        if not _covered(domain, verified):
            return Verdict.reject(
                NOT_VERIFIED.format(what="From", domain=shown(domain)),
                f"From domain {domain} not in verified {sorted(verified)}",
            )
        refused = _disguised("From", name, address, verified)
        if refused:
            return refused
        for header in ("Sender", "Reply-To"):
            for name, addr in (p for v in txn.headers(header) for p in _mailboxes(v)):
                if not _covered(domain_of(addr), verified):
                    return Verdict.reject(
                        NOT_VERIFIED.format(what=header, domain=shown(domain_of(addr) or addr)),
                        f"{header} {addr!r} not in verified {sorted(verified)}",
                    )
                refused = _disguised(header, name, addr, verified)
                if refused:
                    return refused
        if self.options.require_dmarc:
            return _dmarc(domain, ctx.resolver)
        return Verdict.ok(f"From {address} in verified domain; display name, Sender, Reply-To checked")


# A sender's messages carry the same From (and Reply-To) over and over: parse each value
# once. Both functions are pure; the values are header text (str), never Header objects.
@functools.lru_cache(maxsize=1024)
def _mailboxes(value: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_mailbox(value))


@functools.lru_cache(maxsize=1024)
def _disguise(name: str, domain: str) -> str | None:
    return display_name_disguise(name, domain)


def _disguised(header: str, name: str, address: str, verified: set[str]) -> Verdict | None:
    """The refusal when the display name or the local part of a mailbox shows an address or a
    domain other than the customer's verified ones (the mail client shows both), else None."""
    domain = domain_of(address)
    if not address.rsplit("@", 1)[0].strip():
        return Verdict.reject(
            f"The {header} address {shown(address)} has no local part",
            f"{header} address {address!r} has an empty local part",
        )
    disguise = _disguise(name, domain)
    if disguise and not _covered(domain_of(disguise) or disguise, verified):
        return Verdict.reject(
            f"The {header} display name shows {shown(disguise)}, which is not "
            f"the sending domain {domain}; remove it from the display name",
            f"{header} display name {name!r} disguises {disguise}",
        )
    disguise = _local_part_disguise(address)
    if disguise and not _covered(domain_of(disguise) or disguise, verified):
        return Verdict.reject(
            f"The {header} address shows {shown(disguise)} before its domain "
            f"{domain}; use a plain address without it",
            f"{header} local part of {address!r} disguises {disguise}",
        )
    return None


@functools.lru_cache(maxsize=1024)
def _local_part_disguise(address: str) -> str | None:
    return local_part_disguise(address)


def _covered(domain: str, verified: set[str]) -> bool:
    return any(is_subdomain_or_same(domain, parent) for parent in verified)


def _dmarc(domain: str, resolver: Resolver | None) -> Verdict:
    """A DMARC record at the From domain or a parent (organizational domain, without the PSL)."""
    if resolver is None:
        return Verdict.ok(f"From {domain} verified; DMARC not checked (no resolver)")
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        name = "_dmarc." + ".".join(labels[i:])
        try:
            answer = resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            return Verdict.tempfail(
                f"The DMARC record of {domain} could not be looked up; try again later",
                f"DMARC lookup {name}: {type(exc).__name__}",
                enhanced="4.4.3",
            )
        for rdata in answer:
            if b"".join(rdata.strings).strip().lower().startswith(b"v=dmarc1"):
                return Verdict.ok(f"From {domain} verified; DMARC record at {name}")
    return Verdict.reject(
        f"From domain {domain} has no DMARC record; publish one at _dmarc.{domain}",
        f"no DMARC record for {domain} or its parents",
    )
