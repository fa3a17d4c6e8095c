"""role-address: role and general inboxes (sales@, webmaster@ ...) get no campaigns (RULES.md
"Role addresses": RFC 2142 plus the common general inboxes; the list is config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict
from policies._text import shown

DEFAULT_ROLES = frozenset(
    """
    abuse admin administrator billing bounce compliance devnull dns ftp hostmaster info inoc
    ispfeedback ispsupport list list-request listserv mailer-daemon maildaemon majordomo marketing
    news noc nobody noreply no-reply null phish phishing postmaster privacy registrar root sales
    security spam spamtrap support sysadmin tech undisclosed-recipients unsubscribe usenet uucp
    webmaster www
    office contact kontakt hello team service help helpdesk enquiries inquiries feedback press
    presse jobs careers hr orders bestellung buchhaltung einkauf verkauf vertrieb sekretariat
    verwaltung vorstand zentrale
""".split()
)


def role_key(address: str) -> str:
    """Local part, lower-cased, quotes and `+tag` removed: `"Sales+x"@A.org` -> `sales`."""
    local = address.strip().strip("<>").rpartition("@")[0] or address.strip().strip("<>")
    return local.strip('"').lower().split("+", 1)[0]


class RoleAddress(Policy):
    name = "role-address"
    phases = (Phase.RCPT,)
    touches = Touches.NOTHING  # compares the address with a list
    description = "the recipient is a role or general inbox (sales@, webmaster@, abuse@ ...)"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        add: list[str] = Field(default_factory=list)
        remove: list[str] = Field(default_factory=list)

    options: Options

    def __init__(self, options: BaseModel | None = None) -> None:
        super().__init__(options)
        opts = self.options
        self.roles = (DEFAULT_ROLES | {r.strip().lower() for r in opts.add}) - {
            r.strip().lower() for r in opts.remove
        }

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        rcpt = (txn.current_rcpt or "").strip().strip("<>")
        if not rcpt:
            return Verdict.ok("no recipient to check")
        key = role_key(rcpt)
        if key in self.roles:
            return Verdict.reject(
                f"{shown(rcpt, 254)} is a role address; role addresses may not receive campaigns",
                f"recipient local part {key!r} is on the role-address list",
            )
        return Verdict.ok(f"recipient local part {key!r} is not a role address")
