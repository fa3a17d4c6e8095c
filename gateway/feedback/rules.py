"""Bounce classification table (data, not code).

In the spirit of KumoMTA's bounce classifier: an ordered list of rows, the first row whose
conditions all hold decides. A row may test

* ``status``: the RFC 3463 enhanced code, ``x`` = any digit, ``*`` = any number, ``[..]`` = a
  digit class, ``|`` separates alternatives, ``none`` = no code given
  (``"x.1.1"``, ``"5.7.*"``, ``"x.[02-7].*|none"``);
* ``reply``: the SMTP reply code (``"421"``, ``"5xx"``);
* ``text``: a case-insensitive regex over the diagnostic, unfolded to one line;
* ``phase``: the SMTP command the failure answered, as the transcript tells (``"rcpt"``,
  ``"data"``; ``"!rcpt"`` = anything but RCPT).

Classes (RULES.md "Bounces"):
    hard                 suppress at once (the address does not exist / cannot receive mail)
    soft                 counted against the recipient; suppressed after 3 within the window
    not-recipient-fault  our side or the path (policy, reputation, rate, TLS, content, size):
                         never suppress, count per customer and alert
    none                 not a failure (delayed, delivered, auto-reply ...)

Why text rows at all: many MTAs send no enhanced code, a generic one (5.0.0, 5.5.0) or a wrong
one (5.1.1 for a spam block), so the text decides whenever it is specific. Order of the table:
  1. specific signals that would read as something else (null MX, Gmail's inactive account,
     Office 365's "Access denied" for a missing user, codes about our own sender address),
     challenge-response systems (class none: not a bounce), and the words that beat a
     generic code (RULES.md): a mailbox gone for good, the resolver's "no such host",
     a mailbox full worded as a size limit or "too many mails";
  2. not-recipient-fault texts (blocklists, rate limits, spam, auth, TLS, size, content), so
     they win over any generic 5.x.x;
  3. mailbox full (soft) before unknown-user texts: full mailboxes often come with a 5.1.1;
  4. unknown domain / user (hard) - a "user unknown" text is trusted with an address code
     (x.1.x), a generic one (x.0.0, x.5.0, none) or a reply to RCPT TO; said after DATA it is
     a filter's wording (the mailbox was accepted at RCPT), then mailbox disabled (soft);
  5. codes alone, then reply codes alone, then catch-alls (soft: counted, never suppressed
     at once).
A hard verdict on a temporary code (4.x.x) is downgraded to soft by ``classify``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

HARD = "hard"
SOFT = "soft"
NRF = "not-recipient-fault"
NONE = "none"
CLASSES = (HARD, SOFT, NRF, NONE)


@dataclass(frozen=True)
class Rule:
    """One row of the table; every condition given must hold."""

    bounce_class: str
    name: str
    status: str | None = None  # "5.1.1", "x.2.2", "5.7.*"; alternatives with "|"; "none" = no code
    reply: str | None = None  # "421", "55x", "4xx"
    text: str | None = None  # regex, searched case-insensitively
    phase: str | None = None  # SMTP command answered: "rcpt", "data", "mail"; "!rcpt" = not rcpt
    _text_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _status_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _reply_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compile once at import; frozen dataclass needs object.__setattr__.
        object.__setattr__(self, "_text_re", re.compile(self.text, re.I) if self.text else None)
        object.__setattr__(self, "_status_re", _code_pattern(self.status) if self.status else None)
        object.__setattr__(self, "_reply_re", _code_pattern(self.reply) if self.reply else None)

    def matches(self, status: str | None, reply: str | None, text: str, phase: str | None = None) -> bool:
        if self._status_re is not None and not self._status_re.fullmatch(status or "none"):
            return False
        if self._reply_re is not None and not (reply and self._reply_re.fullmatch(reply)):
            return False
        if self.phase is not None and not _phase_matches(self.phase, phase):
            return False
        return not (self._text_re is not None and not self._text_re.search(text))


def _phase_matches(wanted: str, phase: str | None) -> bool:
    if wanted.startswith("!"):
        return phase != wanted[1:]
    return phase == wanted


def _code_pattern(pattern: str) -> re.Pattern[str]:
    """'x.1.1' / '5.7.*' / '55x' / 'x.[02-7].*' / 'x.0.0|none' -> regex; x is one digit,
    * any digits, [..] a digit class."""
    alternatives = []
    for alt in pattern.split("|"):
        out = []
        in_class = False
        for ch in alt.strip():
            if in_class or ch == "[":
                out.append(ch)
                in_class = ch != "]"
            elif ch in "xX":
                out.append(r"\d")
            elif ch == "*":
                out.append(r"\d+")
            else:
                out.append(re.escape(ch))
        alternatives.append("".join(out))
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


def R(
    cls: str,
    name: str,
    *,
    status: str | None = None,
    reply: str | None = None,  # noqa: N802
    text: str | None = None,
    phase: str | None = None,
) -> Rule:
    return Rule(cls, name, status=status, reply=reply, text=text, phase=phase)


# --- text fragments shared by several rows -------------------------------------------------

_BLOCKLIST = (
    r"(?<!not )listed (in|on|at|by)|black ?list|block ?list|deny ?list|\bdnsbl|\brbl\b"
    r"|spamhaus|spamcop|sorbs|barracudacentral|uceprotect|abuseat|\bcbl\b|dnsrbl"
    r"|realtime block|mail-abuse\.org|spameatingmonkey|\bpsbl\b|\buribl\b|\bsurbl\b"
)
_SPAM = (
    r"\bspam|junk ?mail|unsolicited|\bbulk (e-?)?mail|\buce\b|scored as"
    r"|content (was )?(rejected|filtered|blocked)|suspicious|phish|malicious|dangerous"
    r"|message (content )?(was )?(rejected|blocked|filtered) (as|due to|by)"
)
_RATE = (
    r"rate ?limit|too many (messages|mails|emails|connections|recipients|concurrent|sessions)"
    r"|throttl|sending rate|exceeded (the )?(rate|sending|hourly|daily)|receiving mail at a rate"
    r"|temporarily deferred|deferred due to|unusual rate|connection limit|too much mail"
    r"|frequency limit|sending (quota|limit)|too many smtp"
)
_AUTH = (
    r"\bspf\b|\bdkim\b|\bdmarc\b|sender policy framework|not authenticated|unauthenticated"
    r"|authentication (failed|failure|required|check)"
    r"|(reverse|rdns|ptr).{0,20}(dns|record|lookup|hostname)|cannot find your hostname|no ptr"
    r"|client host .{0,40}(rejected|refused)|sender address rejected|sender domain"
    r"|sender (is )?(not allowed|denied|rejected|blocked|unknown)|domain of sender"
    r"|sender verify|mail from.{0,30}rejected|\bhelo\b"
)
_TLS = r"\btls\b|starttls|\bssl\b|certificate|encryption (is )?required"
_SIZE = (
    r"message (size|length)|too (large|big)|size (limit|exceeded)|message is larger"
    r"|exceeds? (the )?(maximum|max|size|message size|allowed)|maximum (allowed )?(message )?size"
)
_CONTENT = (
    r"\bvirus|malware|infected|attachment|content (policy|filter|rejected|error)|prohibited"
    r"|forbidden|message (was )?(refused|rejected) (because|due)|\burl\b"
    r"|\blinks?\b.{0,30}(blocked|reject)|improper|not (rfc|compliant)|rfc ?(2)?822"
    r"|syntax error|line too long|bare (lf|cr)|header (error|violation)"
    r"|invalid (header|message)|malformed (message|header|mime)"
)
_POLICY = (
    r"\bblock(ed|ing)?\b|\bpolicy|policies|denied|refused|rejected (for|due to|by|because)"
    r"|reputation|not allowed|prohibit|banned|blacklisted|your (ip|host|server|network)"
    r"|reject(ed)? .{0,30}(ip|host|sender|network)|(ip|host) .{0,30}(blocked|rejected|not permitted)"
    r"|administrative(ly)? prohibit|access denied|service not available|not permitted"
)
_FULL = (
    r"mailbox (is |was )?(currently )?full|full mailbox|mailbox .{0,20}full|quota|over ?quota"
    r"|storage (space|allocation|limit|quota)|out of (storage|space|disk)|box full"
    r"|insufficient (disk )?(space|storage)|mail ?box size|too (much|many) (mail|messages) in"
    r"|exceed(ed|s)? (his|her|the|its|their)? ?(storage|mailbox size|disk)"
)
_DISABLED = (
    r"disabled|suspended|deactivated|de-activated|inactive|\blocked\b|not active|been closed"
    r"|account (is |has been )?(closed|expired|blocked|frozen|on hold)"
    r"|mailbox (is )?(not active|frozen|blocked)|temporarily (disabled|blocked|unavailable)"
    r"|no longer (active|in use)"
)
_UNKNOWN_USER = (
    r"user ?unknown|unknown (user|recipient|mailbox|address|local[- ]?part|account|e-?mail)"
    r"|no such (user|mailbox|recipient|address|account|person|local user|one|mail ?box)"
    r"|(user|mailbox|recipient|address|account|addressee) .{0,40}(does ?n[o']t exist|not exist)"
    r"|does ?n[o']t exist|doesn't have an? .{0,20}account|does not have an account"
    r"|invalid (recipient|mailbox|address|user|e-?mail|final delivery userid|userid)"
    r"|(recipient|mailbox|user|address|account|addressee) (was |is )?(not found|unknown|invalid)"
    r"|(recipient|mailbox|user|address|account) (was |is )?unavailable"
    r"|mailbox unavailable|unavailable mailbox|recipnotfound|name is not recognized"
    r"|not (a )?(valid|known) (user|recipient|mailbox)|not our customer|is not a valid"
    r"|no (mailbox|account|user) (here|by that name|with that name)|no mailbox"
    r"|address (is )?(unknown|invalid)|unrouteable address|unknown local|address lookup failed"
    r"|user (is )?not (found|local|known|here|listed)|no valid recipients|addressee unknown"
    r"|bad (destination|recipient)|not listed in .{0,40}(directory|address book)"
    r"|could ?n[o']t (be )?f(ou)?nd|could not be found|undeliverable address|address does not"
    r"|address (is )?(possibly )?incorrect|check (if|that|whether) (the )?address is correct"
)
_UNKNOWN_HOST = (
    r"host or domain name not found|domain (name )?(not found|does ?n[o']t exist|not exist|unknown)"
    r"|unrouteable mail domain|\bno mx\b|host not found|unknown host|host unknown"
    r"|name service error|nxdomain|no such domain|domain is not (valid|registered|reachable)"
    r"|bad domain|no (route|dns|a record)|unknown domain|unresolvable"
    r"|\b[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,} does ?n[o']t exist"
    r"|host .{0,40}(could not be found|not found)|could not resolve|domain .{0,20}lookup fail"
    r"|dns (error|failure|lookup)"
)
_MOVED = (
    r"has moved|moved (to|permanently)|changed (his|her|their)? ?(e-?mail )?address"
    r"|forwarding address|no longer (at|with|valid)"
)
_EXPIRED = (
    r"expired|retry time(out)? (not reached|exceeded)|could not be delivered (for|within)"
    r"|delivery time|too long|giving up|gave up|timed? ?out|time limit|no longer trying"
    r"|couldn't be delivered .{0,30}(days|hours)|queue|deferred"
)
_NETWORK = (
    r"connection (refused|reset|closed|lost|timed out|failure)|network (error|unreachable)"
    r"|unable to connect|could not connect|can't connect|no route to host|host unreachable"
    r"|lost connection|broken pipe|temporar(y|ily)|try again|service unavailable|resources"
    r"|system (error|busy|full)|server (error|busy)|local error|insufficient system"
)
# Challenge-response and allowlist systems: the recipient's filter wants the sender to
# confirm by hand; no delivery failed (RULES.md: not bounces at all).
_CHALLENGE = (
    r"not (been )?pre-?approved|requires? (a |your )?(confirmation|verification)"
    r"|challenge[- ]response|(sender|you) (is |are )?not (yet )?(on|in) (the|my|his|her|their)"
    r" (white ?list|allow ?list|approved senders?( list)?|guest list)"
    r"|approved senders? list|(confirm|verify) (that )?you are (a )?(human|real person|not a robot)"
    r"|(held|is waiting|waits) (for|until) (your )?(confirmation|verification)"
    r"|please (confirm|verify) (your (e-?mail )?address|that you)|\bboxbe\b|spam ?arrest|mailinblack"
    r"|\bwaitlisted\b|add yourself to (my|the|his|her) .{0,20}guest list"
    r"|best[äa]tigen sie,? dass sie|confirmez que vous [êe]tes|confirme que (usted )?(es|eres)"
)
# A sender-side "does not exist": our own address or domain, never the recipient's.
_SENDER_GONE = (
    r"(sender|mail from|envelope from|return[- ]path|absender|exp[ée]diteur|remitente)\b"
    r"[^.;]{0,40}(does ?n[o']t exist|not exist|unknown|not found|invalid|existiert nicht"
    r"|unbekannt|n'existe pas|inconnue?|no existe|desconocido)|unroute?able sender"
    # "your account": the one we send with (a relay's login), never the recipient's
    r"|\byour (e-?mail )?(account|mailbox)\b[^.;]{0,40}(deactivated|disabled|suspended|closed"
    r"|blocked|terminated|deleted)"
)
# Our HELO name or client host refused ("Helo command rejected: Host not found"): the
# resolver's words below are about us there, not about the recipient's domain.
_OUR_HOST = r"\bhelo\b|\behlo\b|client host rejected|reverse (dns|hostname)|cannot find your hostname"
# A mailbox gone for good, in words specific enough to beat a generic code (5.0.0, qmail's
# 5.7.1, 5.5.0, none): RULES.md "Bounces". English, German, French, Spanish.
_GONE = (
    r"(mail ?box|account|recipient|user|addressee|e-?mail address|destination address)\b[^.;]{0,40}"
    r"\b(does ?n[o']t exist|not exist|deactivated|de-activated|discontinued"
    r"|(has been|was|is|been) (closed|deleted|terminated|removed))"
    r"|\bno (such )?mail ?box\b|\bno such (account|recipient)\b|\bmailbox not found"
    r"|not an? active (e-?mail )?(address|account|mailbox|user)"
    r"|(mail ?box|account|address|user) (is )?(not|no longer) active|inactive (mailbox|account|user)"
    r"|(empf[äa]nger|benutzer|postfach|konto|e-?mail-adresse|adresse)\b[^.;]{0,30}"
    r"(existiert nicht|unbekannt|nicht vorhanden|nicht gefunden|deaktiviert|gel[öo]scht)"
    r"|kein (solches )?postfach|unbekannte(r)? (empf[äa]nger|benutzer)"
    r"|(destinataire|utilisateur|adresse|bo[îi]te|compte)\b[^.;]{0,30}"
    r"(n'existe pas|inexistante?|inconnue?|d[ée]sactiv[ée]e?|supprim[ée]e?|ferm[ée]e?)"
    r"|(destinatario|usuario|direcci[óo]n|buz[óo]n|cuenta)\b[^.;]{0,30}"
    r"(no existe|inexistente|desconocid[oa]|desactivad[oa]|eliminad[oa]|cerrad[oa])"
)
# The recipient's domain has no host: the resolver's own words (getaddrinfo, Exim, Node),
# qmail's "couldn't find any host" and rcpthosts refusal (this server does not serve it).
_RESOLVER = (
    r"name or service not known|nodename nor servname|getaddrinfo enotfound|\bnxdomain\b"
    r"|host not found(?!,? try again)|couldn't find any host|could not find any host"
    r"|no (such )?host (named|by that name)|no address (record|associated)"
    r"|isn't in my (list of allowed )?rcpthosts|not in my (list of allowed )?rcpthosts"
    r"|(unable|failed) to resolve (the )?(host|domain|mx)|unknown (host|domain)"
)
# Mailbox full worded as a size limit of the mailbox or "too many mails" (not a message
# size or a sending rate).
_FULL_WORDED = (
    r"mail ?box (size )?(limit|quota) (exceeded|reached)|mail ?box[^.;]{0,20}exceeds? "
    r"(the |its )?(allowed|maximum|max) (size|storage)|mail ?box size exceeded"
    r"|too many (mails|messages|e-?mails) (on the server|in (the |this |his |her )?(mail ?box|inbox|account))"
    r"|zu viele (e-?)?mails|postfach (ist )?(voll|[üu]berf[üu]llt)"
    r"|speicherplatz (ist )?(voll|ersch[öo]pft|[üu]berschritten)"
    r"|bo[îi]te (aux lettres |de r[ée]ception )?(du destinataire )?(est )?(pleine|satur[ée]e)"
    r"|quota (d[ée]pass[ée]|atteint|excedido|superado|[üu]berschritten)"
    r"|buz[óo]n (de correo )?(del destinatario )?(est[áa] )?(lleno|completo)|disk quota exceeded"
    # Postfix local(8) hitting mailbox_size_limit
    r"|cannot update mailbox .{0,80}file too large"
)
_NULL_MX = (
    r"null ?mx|indicated no smtp service"
    r"|(domain|host) .{0,60}does ?n[o']t (accept|receive) (any )?(e-?)?mail(?! from)"
)


RULES: tuple[Rule, ...] = (
    # 1. Specific signals that would otherwise look like something else.
    R(HARD, "null-mx", status="x.1.10|x.7.27"),
    R(HARD, "null-mx", text=_NULL_MX),
    R(HARD, "gmail-inactive", status="5.2.1", text=r"inactive"),
    R(SOFT, "mailbox-disabled", status="x.7.13"),  # RFC 3463 (2010): user account disabled
    # Yahoo rejects unknown users only after DATA, always with this wording.
    R(HARD, "unknown-user", text=r"delivery error: dd this user doesn.t have"),
    # Office 365 directory-based edge blocking: the recipient does not exist in the tenant.
    R(HARD, "unknown-user", status="x.4.1", text=r"recipient address rejected: access denied"),
    # x.1.7/x.1.8 are about *our* sender address, whatever the text says about domains.
    R(NRF, "bad-sender", status="x.1.7|x.1.8"),
    # Not bounces at all: the recipient's challenge-response or allowlist filter.
    R(NONE, "challenge-response", text=_CHALLENGE),
    R(NRF, "bad-sender", text=_SENDER_GONE),
    R(NRF, "authentication", text=_OUR_HOST),
    # Google Groups refuses a post (no permission, or no such group): a list's policy,
    # in every language Google writes it, always with its help centre link.
    R(NRF, "group-posting", text=r"groups\.google\.com/support|you do not have permission to post"),
    # Orange's OFR_506 "Mail rejete. Mail rejected": refused as spam (Orange postmaster codes).
    R(NRF, "spam", text=r"\bofr_?506\b|\bmail rejet[ée]\b"),
    # The words beat a generic code: a mailbox gone for good is hard even with 5.0.0,
    # qmail's 5.7.1, 5.5.0 or no code (a 4.x.x code is downgraded to soft by classify).
    R(HARD, "mailbox-gone", status="x.0.0|x.7.1|x.5.0|x.1.*|x.2.[01]|none", text=_GONE),
    R(HARD, "unknown-domain", status="x.0.0|x.7.1|x.5.0|x.1.*|x.4.*|none", text=_RESOLVER),
    R(SOFT, "mailbox-full", text=_FULL_WORDED),
    # au/ezweb (KDDI) answers a recipient's domain filter with "550 : User unknown",
    # the address left out; a real unknown user gets "550 <addr>: User unknown".
    R(NRF, "recipient-filter", text=r"\b550:? : user unknown"),
    # The recipient chose not to get mail from this sender: per customer, not per address.
    R(
        NRF,
        "recipient-filter",
        text=r"recipient('s)? preferences|preferences of the (person|recipient)"
        r"|blocked by (the )?recipient|recipient has (blocked|rejected)",
    ),
    # 2. Not the recipient's fault: these win over any generic 5.x.x code.
    R(NRF, "blocklisted", text=_BLOCKLIST),
    R(NRF, "rate-limit", status="4.7.28"),
    R(NRF, "rate-limit", text=_RATE),
    R(NRF, "spam", text=_SPAM),
    R(NRF, "tls", text=_TLS),
    R(NRF, "authentication", text=_AUTH),
    R(NRF, "size", status="x.3.4|x.2.3"),
    R(NRF, "size", text=_SIZE),
    R(NRF, "content", text=_CONTENT),
    R(
        SOFT,
        "relay-denied",
        text=r"relay(ing)? (access )?(denied|not (permitted|allowed))|not permitted to relay"
        r"|unable to relay|relaying",
    ),
    # 3. Mailbox full before unknown-user texts: full mailboxes often come back with 5.1.1.
    R(SOFT, "mailbox-full", status="x.2.2"),
    R(SOFT, "mailbox-full", text=_FULL),
    # 4. Unknown domain / user, moved.
    R(SOFT, "dns-temporary", text=r"host not found, try again|servfail|temporary (dns|name)"),
    R(HARD, "unknown-domain", text=_UNKNOWN_HOST),
    # "Unknown user" said after DATA: the mailbox was accepted at RCPT, so this is a
    # filter's wording, not a missing mailbox (x.1.x codes excepted: Sendmail's pipelined
    # transcripts show DATA last even for RCPT errors, and the code is explicit).
    R(SOFT, "unknown-user-after-data", status="x.[02-7].*|none", phase="data", text=_UNKNOWN_USER),
    R(HARD, "moved", status="x.1.6"),
    R(HARD, "moved", text=_MOVED),
    # The text is trusted with an address code, a generic one (x.5.0 is Sendmail's and
    # Hotmail's default for any 550) or none; with a code that says something else (mailbox
    # state x.2, system x.3, policy x.7 ...) only when the reply answered RCPT TO.
    R(HARD, "unknown-user", status="x.1.*|x.0.0|x.5.0|none", text=_UNKNOWN_USER),
    R(HARD, "unknown-user", phase="rcpt", text=_UNKNOWN_USER),
    R(HARD, "unknown-user", status="x.1.1|x.1.0|x.1.3"),
    R(HARD, "unknown-domain", status="x.1.2|x.4.4"),
    R(SOFT, "mailbox-disabled", status="x.2.1"),
    R(SOFT, "mailbox-disabled", text=_DISABLED),
    # Generic policy words only now: a "blocked" without a more specific reason.
    R(NRF, "policy", text=_POLICY),
    # 5. Status codes alone.
    R(NRF, "policy", status="x.7.*"),
    R(NRF, "content", status="x.6.*"),
    R(NRF, "protocol", status="x.5.*"),
    R(SOFT, "unknown-user-unconfirmed", text=_UNKNOWN_USER),
    R(SOFT, "mailbox-error", status="x.2.*"),
    R(SOFT, "expired", status="x.4.7"),
    R(SOFT, "expired", text=_EXPIRED),
    R(SOFT, "network", status="x.4.*"),
    R(SOFT, "network", text=_NETWORK),
    R(SOFT, "system", status="x.3.*"),
    # 6. Reply codes alone (no enhanced code given).
    R(NRF, "rate-limit", reply="421"),
    R(SOFT, "mailbox-full", reply="552"),
    R(SOFT, "unclassified-permanent", reply="5xx"),
    R(SOFT, "unclassified-temporary", reply="4xx"),
    R(SOFT, "unclassified-permanent", status="5.*.*"),
    R(SOFT, "unclassified-temporary", status="4.*.*"),
)

MAX_TEXT = 16 * 1024

# Rows that mean "the MTA gave no reason we understand": the caller may retry the
# classification on a wider text (e.g. the whole notification) when it gets one of these.
WEAK_RULES = frozenset({"unclassified-permanent", "unclassified-temporary", "unclassified"})


@dataclass(frozen=True)
class Classification:
    bounce_class: str
    rule: str


def classify(
    status: str | None, reply: str | None, text: str, phase: str | None = None, rules: Sequence[Rule] = RULES
) -> Classification:
    """First matching row wins; no match at all is a soft 'unclassified'.

    A hard result from a temporary failure (4.x.x, or 4xx without enhanced code) is
    downgraded to soft: the MTA gave up on a condition it considered transient (DNS
    timeouts, greylisting ...), which is no proof that the address cannot exist.
    """
    # Unfold (MTAs wrap diagnostics at arbitrary points) and bound the work: the reason is
    # always near the start, and 70 regexes over megabytes of hostile text would be slow.
    text = " ".join(text[:MAX_TEXT].split())
    for rule in rules:
        if rule.matches(status, reply, text, phase):
            if rule.bounce_class == HARD and _temporary(status, reply):
                return Classification(SOFT, f"{rule.name}-temporary")
            return Classification(rule.bounce_class, rule.name)
    return Classification(SOFT, "unclassified")


def _temporary(status: str | None, reply: str | None) -> bool:
    if status:
        return status.startswith("4")
    return bool(reply and reply.startswith("4"))
