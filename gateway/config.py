"""The config file: one validated model, unknown keys rejected with their path.

Relative paths in the file are resolved against the directory of the config file, so
`gateway -c /etc/gateway/config.yaml` and `gateway -c config.yaml` from the checkout both work.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_PATHS = (Path("config.yaml"), Path("/etc/gateway/config.yaml"))


class ConfigError(Exception):
    """A config file that cannot be used; the message lists every problem with its key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsFiles(_Strict):
    cert: Path
    key: Path


class Listener(_Strict):
    kind: Literal["submission", "feedback", "http", "milter"]
    address: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    tls: TlsFiles | None = None
    # Implicit TLS (port 465 style) instead of STARTTLS.
    implicit_tls: bool = False
    # Plaintext AUTH allowed: development on loopback only (validated below).
    trusted_local: bool = False
    # Sending engines on the ESP's internal network authenticated by address, as customer NAME.
    trusted_networks: dict[str, str] = Field(default_factory=dict)

    @field_validator("trusted_networks")
    @classmethod
    def _networks_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    def network_customer(self, address: str) -> str | None:
        """The customer a client at `address` sends as by `trusted_networks`, if any."""
        if not self.trusted_networks or not address:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        return next((name for net, name in self.trusted_networks.items() if ip in _ip_network(net)), None)

    @model_validator(mode="after")
    def _trusted_local_is_loopback(self) -> Listener:
        if self.trusted_local:
            try:
                loopback = ipaddress.ip_address(self.address).is_loopback
            except ValueError:
                loopback = self.address == "localhost"
            if not loopback:
                raise ValueError("trusted_local: true is only allowed on a loopback address")
        if self.implicit_tls and self.tls is None:
            raise ValueError("implicit_tls needs tls: {cert, key}")
        return self


class DownstreamAuth(_Strict):
    username: str
    password_file: Path


class Downstream(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=10025, ge=1, le=65535)
    starttls: Literal["none", "opportunistic", "required"] = "opportunistic"
    # Verify the downstream certificate (off for a loopback MTA with a self-signed cert).
    verify_tls: bool = False
    auth: DownstreamAuth | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    timeout: float = Field(default=120.0, gt=0)
    # Embedded capture MTA writing a Maildir (first run / demo) instead of host/port.
    capture: Path | None = None


class Store(_Strict):
    url: str = "sqlite:///var/gateway.db"
    cache_ttl: float = Field(default=5.0, ge=0)


class Limits(_Strict):
    max_recipients: int = Field(default=1, ge=1)
    max_message_size: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_sessions: int = Field(default=1000, ge=1)
    # RFC 5321 4.5.3.1.6: 998 octets + CRLF (+1 for the transparency dot).
    max_line_length: int = Field(default=1001, ge=78)
    # MIME complexity, checked before the message is parsed (a parse of 240,000 tiny parts
    # takes seconds of CPU): more parts or deeper nesting is refused with 552 5.3.4.
    max_mime_parts: int = Field(default=500, ge=1)
    max_mime_depth: int = Field(default=20, ge=2)
    command_timeout: float = Field(default=300.0, gt=0)
    data_timeout: float = Field(default=600.0, gt=0)
    # Failed AUTH slow-down (gateway/authguard.py): failures of one client address (and of one
    # login) are answered at least this many seconds apart, across connections, workers and
    # nodes; 0 turns the slow-down off.
    auth_failure_delay: float = Field(default=1.0, ge=0)
    # Failures' worth of delay an address may owe before its new attempts wait to be checked.
    auth_failure_allowance: int = Field(default=5, ge=0)
    # Longest such a wait; beyond it the attempt gets 421 4.7.0, its password unchecked.
    auth_failure_max_delay: float = Field(default=30.0, ge=0)
    # Failures on one connection before it is closed with 421 4.7.0.
    auth_failures_per_connection: int = Field(default=3, ge=1)
    shutdown_grace: float = Field(default=30.0, ge=0)


class MailId(_Strict):
    header: str = "X-Mailing-ID"
    key_file: Path = Path("var/mailid.key")
    verp_prefix: str = "m"


class Dkim(_Strict):
    keys_dir: Path = Path("var/dkim")
    algorithms: list[Literal["rsa-sha256", "ed25519-sha256"]] = Field(
        default_factory=lambda: ["rsa-sha256"]  # type: ignore[arg-type, return-value]
    )
    missing_key: Literal["tempfail", "unsigned"] = "tempfail"
    # Optional second signature with the ESP's own domain.
    esp_domain: str | None = None
    enabled: bool = True


class Logging(_Strict):
    format: Literal["logfmt"] = "logfmt"
    file: Path | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"
    # 0: reopen the file when logrotate moves it (systemd/logrotate.conf); > 0: rotate by size
    # in-process (one worker only: several workers would rotate under each other).
    max_bytes: int = Field(default=0, ge=0)
    backup_count: int = Field(default=10, ge=0)


class FeedbackHeaders(_Strict):
    # Gmail Feedback-ID sender id: constant 5-15 characters, never per message.
    sender_id: str = Field(default="espgw", min_length=5, max_length=15)
    type: str = "newsletter"
    fbl_address: str | None = None
    csa_complaints: str | None = None


class FeedbackIntake(_Strict):
    """Inbound bounces and complaints (RULES.md "Bounces", "Complaints")."""

    # Domains whose every address the feedback listener accepts, besides `bounce_domain`.
    bounce_domains: list[str] = Field(default_factory=list)
    # Feedback-loop report addresses (ARF); `feedback.fbl_address` is accepted as well.
    fbl_addresses: list[str] = Field(default_factory=list)
    # Where people and the CSA complaints office forward the mail they complain about.
    abuse_addresses: list[str] = Field(default_factory=list)
    # The stored copy of a report is cut after this many bytes (the parse sees all of it).
    max_raw_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Concurrent sessions on the feedback listeners (per worker); more get 421 and retry later.
    # Apart from limits.max_sessions, so a bounce storm cannot crowd out the customers.
    max_sessions: int = Field(default=200, ge=1)
    # A bounce without a verifying mail ID never acts (RULES.md "Only what the gateway sent can
    # be bounced"); with this on, its event notes the newest message the ledger relayed to the
    # address it names (details.probable_mail_id), for the abuse team to look at.
    final_recipient_fallback: bool = True
    # Bounded cost of one report: the parse reads its first max_parse_bytes (the stored copy
    # is cut at max_raw_bytes), walks at most max_parts MIME parts, classifies at most
    # max_recipients of the recipients it names, and gives up after parse_time_budget seconds
    # (the report is then recorded unparsed and changes nothing).
    max_parse_bytes: int = Field(default=256 * 1024, ge=16 * 1024)
    max_parts: int = Field(default=100, ge=4)
    max_recipients: int = Field(default=10, ge=1)
    parse_time_budget: float = Field(default=2.0, gt=0)
    # Threads per worker that take reports in. Parsing is CPU work: at most this many reports
    # are parsed at once, off the event loop, so a flood of crafted reports queues behind
    # them instead of taking the CPU from the submission sessions of the same worker.
    parse_workers: int = Field(default=1, ge=1, le=16)
    soft_bounce_threshold: int = Field(default=3, ge=1)
    soft_bounce_window_days: float = Field(default=30.0, gt=0)
    complaint_warning_rate: float = Field(default=0.001, ge=0, le=1)
    complaint_suspend_rate: float = Field(default=0.003, ge=0, le=1)
    complaint_window_days: float = Field(default=7.0, gt=0)
    # No automatic suspension below this many accepted messages in the window.
    complaint_min_messages: int = Field(default=1000, ge=1)
    auto_suspend: bool = True

    @model_validator(mode="after")
    def _rates_ordered(self) -> FeedbackIntake:
        if self.complaint_warning_rate > self.complaint_suspend_rate:
            raise ValueError("complaint_warning_rate must not exceed complaint_suspend_rate")
        return self


class Quota(_Strict):
    """Sending limits per customer (RULES.md "Volume and reputation", gateway/quota.py)."""

    enabled: bool = True
    # Platform defaults: recipients accepted per clock hour and per UTC day. A customer's own
    # limit (`gateway customer set-limits`) replaces them; 0 there means "the default".
    per_hour: int = Field(default=10_000, ge=1)
    per_day: int = Field(default=100_000, ge=1)
    # Largest block a process reserves from the shared counter at once; it shrinks to a tenth
    # of what is left, so near a limit (and for small limits) every unit is taken singly.
    block_size: int = Field(default=50, ge=1)
    # Probation of a newly activated customer: ends when both have passed (CSA: first 3
    # campaigns); `gateway customer graduate` ends it early, `set-limits --probation-until`
    # moves the date.
    probation_days: float = Field(default=14.0, ge=0)
    probation_campaigns: int = Field(default=3, ge=0)
    probation_per_hour: int = Field(default=500, ge=1)
    probation_per_day: int = Field(default=2_000, ge=1)


class Breaker(_Strict):
    """The circuit breaker per customer (gateway/breaker.py). Rates are over the sliding
    window (since the customer's last resume, if later) and act only once the customer sent
    `min_messages` in it. Complaint rates, window and minimum are `feedback_intake.complaint_*`."""

    enabled: bool = True
    window_hours: float = Field(default=24.0, gt=0)
    min_messages: int = Field(default=500, ge=1)
    bounce_warning_rate: float = Field(default=0.02, ge=0, le=1)
    bounce_pause_rate: float = Field(default=0.05, ge=0, le=1)
    # The gateway's own refusals at RCPT (role, consent, suppression) per recipient tried.
    refusal_warning_rate: float = Field(default=0.10, ge=0, le=1)
    refusal_policies: list[str] = Field(default_factory=lambda: ["role-address", "consent", "suppression"])

    @model_validator(mode="after")
    def _rates_ordered(self) -> Breaker:
        if self.bounce_warning_rate > self.bounce_pause_rate:
            raise ValueError("bounce_warning_rate must not exceed bounce_pause_rate")
        return self


class HttpPages(_Strict):
    """The recipients' pages and the consent API on the `http` listener (RULES.md "Unsubscribe
    endpoint", "Double opt-in evidence")."""

    # Base of the links the gateway puts in mail (List-Unsubscribe of managed customers, DOI
    # confirmation links): the https address under which the http listener is reachable from
    # the internet (behind a reverse proxy). http:// is accepted for loopback only (local tests).
    public_url: str | None = None
    # HMAC keys of the URL tokens: '<key-id> <base64>' lines like the mail ID key file; the
    # last line signs, every line verifies. Created (0600) with one key on first use.
    token_key_file: Path = Path("var/http.key")
    # API keys of the consent API: lines '<customer> <sha256 hex of the key>' (written by
    # `gateway consent api-key add`). Missing file: the API answers 401 to everyone.
    api_keys_file: Path = Path("var/api-keys")
    # Days a DOI confirmation link stays valid (0: forever). Unsubscribe links never expire.
    confirm_link_days: float = Field(default=30.0, ge=0)
    default_language: Literal["en", "de"] = "en"
    # Reverse proxies whose X-Forwarded-For is believed (CIDRs); the client (evidence IP, /report
    # limit key) is the right-most X-Forwarded-For address that is not one of them
    # (gateway/http/clientaddr.py). Without it, the TCP peer, whatever the request claims.
    trusted_proxies: list[str] = Field(default_factory=list)
    # The report-abuse form: largest upload, and reports per client IP (IPv6: per /64) per
    # hour, counted in the store so the limit holds across workers and nodes.
    max_upload_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    report_limit_per_hour: int = Field(default=30, ge=1)

    @field_validator("public_url")
    @classmethod
    def _public_url_https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme == "http":
            host = parts.hostname or ""
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                raise ValueError("must be an https:// URL (http:// only on a loopback address)")
        elif parts.scheme != "https":
            raise ValueError("must be an https:// URL")
        if not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be a plain base URL like https://gw.esp.example")
        return value.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value


class Webhooks(_Strict):
    """Events to customers (DESIGN §13): delivery of the outbox to each customer's URL."""

    # Run the dispatcher in `gateway serve` (every worker and node may; a lease in the store
    # keeps one event with one of them at a time).
    deliver: bool = True
    # http:// to a loopback receiver (tests, a local relay): never for production customers.
    allow_loopback: bool = False
    # POST to private/link-local addresses: off, so a webhook cannot reach internal services.
    allow_private_networks: bool = False
    retry_base_seconds: float = Field(default=30.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)
    retry_for_hours: float = Field(default=24.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0)
    poll_interval_seconds: float = Field(default=2.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    batch_size: int = Field(default=50, ge=1, le=1000)
    concurrency: int = Field(default=20, ge=1)
    # POSTs per second per process at most: a backlog drains steadily instead of taking the
    # CPU the SMTP sessions of the same process need (50/s is 180,000 events an hour).
    max_per_second: float = Field(default=50.0, gt=0)

    @model_validator(mode="after")
    def _lease_outlasts_a_post(self) -> Webhooks:
        if self.lease_seconds <= self.timeout_seconds:
            raise ValueError(
                "lease_seconds must be longer than timeout_seconds (a lease that "
                "expires during a POST lets a second worker send the same event)"
            )
        return self


class PolicyEntry(_Strict):
    name: str
    mode: Literal["enforce", "monitor", "off"] = "enforce"
    timeout: float = Field(default=5.0, gt=0)
    on_error: str = "451 4.3.5 Policy check unavailable, please try again later"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as False; `mode: off` must still mean "off".
        return "off" if value is False else value


class Config(_Strict):
    hostname: str = "gateway.localdomain"
    listeners: list[Listener] = Field(default_factory=list)
    downstream: Downstream = Field(default_factory=Downstream)
    store: Store = Field(default_factory=Store)
    limits: Limits = Field(default_factory=Limits)
    mail_id: MailId = Field(default_factory=MailId)
    bounce_domain: str | None = None
    feedback: FeedbackHeaders = Field(default_factory=FeedbackHeaders)
    feedback_intake: FeedbackIntake = Field(default_factory=FeedbackIntake)
    dkim: Dkim = Field(default_factory=Dkim)
    logging: Logging = Field(default_factory=Logging)
    http: HttpPages = Field(default_factory=HttpPages)
    webhooks: Webhooks = Field(default_factory=Webhooks)
    quota: Quota = Field(default_factory=Quota)
    breaker: Breaker = Field(default_factory=Breaker)
    policies: list[PolicyEntry] = Field(default_factory=list)

    # Where the file was read from; relative paths are resolved against its directory.
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _unique_policies(self) -> Config:
        seen: set[str] = set()
        for entry in self.policies:
            if entry.name in seen:
                raise ValueError(f"policy {entry.name!r} is listed twice")
            seen.add(entry.name)
        return self

    def path(self, p: Path | str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.base_dir / p

    def store_url(self) -> str:
        """The store URL with a relative sqlite path made absolute."""
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str(self.path(url[len(prefix) :]))
        return url

    def listeners_of(self, kind: str) -> list[Listener]:
        return [listener for listener in self.listeners if listener.kind == kind]


def _format_errors(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in error.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, *, base_dir: Path, source: Path) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    if "base_dir" in data:
        raise ConfigError(f"{source}: base_dir: unknown key")
    try:
        return Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def find_config(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    return DEFAULT_CONFIG_PATHS[0]


def load_config(path: str | os.PathLike[str] | None) -> Config:
    source = find_config(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_config(data, base_dir=source.resolve().parent, source=source)


def check_files(config: Config) -> list[str]:
    """Problems with files the config names that would stop `serve` (for check-config).

    A listener's certificate and key may both be missing: `serve` creates a self-signed pair.
    Only one of them missing means somebody lost a file, which we must not paper over.
    """
    problems: list[str] = []
    for i, listener in enumerate(config.listeners):
        if listener.tls is None:
            continue
        cert, key = config.path(listener.tls.cert), config.path(listener.tls.key)
        if cert.exists() != key.exists():
            missing = "cert" if not cert.exists() else "key"
            problems.append(
                f"listeners.{i}.tls.{missing}: file not found: {cert if missing == 'cert' else key}"
            )
    if config.downstream.auth is not None:
        p = config.path(config.downstream.auth.password_file)
        if not p.exists():
            problems.append(f"downstream.auth.password_file: file not found: {p}")
    return problems


@functools.lru_cache(maxsize=256)
def _ip_network(net: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(net, strict=False)
