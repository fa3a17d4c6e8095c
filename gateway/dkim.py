"""DKIM signing (fast), verification, key generation and DNS checks (DESIGN §7).

Signing. Stock dkimpy makes the RSA signature in pure Python (~14 ms for 2048 bits) and re-parses
the PEM key on every call. Here the private-key operation is OpenSSL's, through
``cryptography``, on the finished SHA-256 digest (PKCS#1 v1.5 with a pre-hashed digest for
rsa-sha256; Ed25519 over the digest for ed25519-sha256, as RFC 8463 specifies), and keys are
parsed once into key objects (``load_keys``). The rest follows dkimpy's ``DKIM.sign`` /
``gen_header`` step by step and tag by tag: dkimpy parses the header block (``rfc822_parse``)
and supplies the trailing-line rules; canonicalization, header selection and folding are small
re-implementations, because dkimpy's per-space regexes alone cost more than the RSA operation.
Each is held to dkimpy's output by differential tests, and since RSA PKCS#1 v1.5 and Ed25519
are deterministic, whole DKIM-Signature headers are compared byte for byte with stock
``dkim.sign`` (and RFC 8463's example signatures are reproduced exactly). One deliberate
difference: ``fold`` never cuts a d=/i= value, which dkimpy does for domains of ~60+ characters,
producing signatures no verifier accepts. With several keys the message is parsed,
canonicalized and body-hashed once.

Header list (``h=``). Every name in ``headers_to_sign`` is signed once per occurrence; names in
``oversign`` are signed once more than they occur (also when absent), so a header of that name
added later breaks the signature. Defaults: ``OVERSIGNED_HEADERS`` and ``SIGNED_IF_PRESENT``.

Verification. ``verify`` runs dkimpy's verifier on every DKIM-Signature, with two changes made in
a subclass: the t=/x= time checks use an injectable ``now`` (dkimpy reads ``time.time()``), and
ed25519 public keys are checked with ``cryptography`` instead of PyNaCl (dkimpy's only ed25519
path, a dependency we do not carry); canonicalization and hashing stay dkimpy's.

Key layout::

    <keys_dir>/<domain>/<selector>.rsa.pem       PKCS#8 PEM, unencrypted, mode 0600
    <keys_dir>/<domain>/<selector>.ed25519.pem

``<domain>`` is lower case (A-labels for IDNs). A selector holds one key: its DNS name can
publish only one record.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dkim
import dns.exception
import dns.resolver
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import correct_empty_body, strip_trailing_lines
from dkim.dnsplug import get_txt as _dns_get_txt
from dkim.util import InvalidTagValueList, parse_tag_value

from gateway.keyfiles import create_exclusive, warn_if_readable_by_others
from gateway.lineends import crlf_only

__all__ = [
    "DEFAULT_HEADERS_TO_SIGN",
    "ED25519_SHA256",
    "OVERSIGNED_HEADERS",
    "RSA_SHA256",
    "SIGNED_IF_PRESENT",
    "DkimError",
    "DkimKeyError",
    "DkimSigner",
    "DnsFunc",
    "KeyRing",
    "SigningKey",
    "VerifyResult",
    "check_dns",
    "dns_txt_name",
    "keygen",
    "load_keys",
    "relaxed_body",
    "relaxed_header",
    "select_headers",
    "signed_header_list",
    "static_dnsfunc",
    "txt_record",
    "verify",
    "zone_record",
]

log = logging.getLogger(__name__)

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
_FILE_TAG = {RSA_SHA256: "rsa", ED25519_SHA256: "ed25519"}
_ALGORITHM_OF_TAG = {tag: alg for alg, tag in _FILE_TAG.items()}
MIN_RSA_BITS = 1024  # receivers reject shorter keys (RFC 8301)
RECOMMENDED_RSA_BITS = 2048

# Signed once more than present: adding another instance (a second From, a forged
# List-Unsubscribe or mail ID) must break the signature. X-CSA-Complaints joins the list because
# RULES.md puts it among the gateway-added headers that live inside the signature, like its
# Feedback-ID/CFBL siblings.
OVERSIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"subject",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
    b"x-mailing-id",
    b"cfbl-address",
    b"cfbl-feedback-id",
    b"x-csa-complaints",
)
# Signed as often as present. Content-Transfer-Encoding is added to the list from the design
# because changing it changes how the signed body bytes are read.
SIGNED_IF_PRESENT: tuple[bytes, ...] = (
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"sender",
    b"cc",
    b"x-campaign-id",
)
DEFAULT_HEADERS_TO_SIGN = OVERSIGNED_HEADERS + SIGNED_IF_PRESENT

_HEADER_NAME = b"DKIM-Signature"
_PKCS1 = padding.PKCS1v15()
_PREHASHED_SHA256 = Prehashed(hashes.SHA256())
_DOMAIN_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
DnsFunc = Callable[..., bytes | str | None]  # dkimpy's: dnsfunc(name: bytes, timeout=5)


class DkimError(Exception):
    """A message that cannot be signed as asked (no From, unsignable header list)."""


class DkimKeyError(DkimError):
    """A key file or key directory that cannot be used; the message names the path."""


# -- keys -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str  # RSA_SHA256 | ED25519_SHA256
    private_key: PrivateKey = field(repr=False)
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in _FILE_TAG:
            raise DkimKeyError(f"unsupported DKIM algorithm {self.algorithm!r}")
        expected = rsa.RSAPrivateKey if self.algorithm == RSA_SHA256 else ed25519.Ed25519PrivateKey
        if not isinstance(self.private_key, expected):
            raise DkimKeyError(f"{self.path or self.selector}: key is not an {self.algorithm} key")
        # d= is ASCII and compared case-insensitively: store the lower-case A-label form.
        object.__setattr__(self, "domain", _norm_domain(self.domain))

    @classmethod
    def from_pem(cls, domain: str, selector: str, pem: bytes, path: Path | None = None) -> SigningKey:
        """Parse a PEM private key (PKCS#8 or PKCS#1); the algorithm follows the key type."""
        where = str(path) if path else f"{selector}._domainkey.{domain}"
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise DkimKeyError(f"{where}: not an unencrypted PEM private key ({exc})") from None
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < MIN_RSA_BITS:
                raise DkimKeyError(f"{where}: RSA key of {key.key_size} bits, receivers need 1024+")
            algorithm = RSA_SHA256
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            algorithm = ED25519_SHA256
        else:
            raise DkimKeyError(f"{where}: {type(key).__name__} keys cannot sign DKIM")
        return cls(_norm_domain(domain), selector, algorithm, key, path)

    def sign_digest(self, digest: bytes) -> bytes:
        """The b= signature of a SHA-256 digest of the canonicalized header fields."""
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(digest, _PKCS1, _PREHASHED_SHA256)
        # RFC 8463 §3: Ed25519 (pure) signs the SHA-256 hash, not the header text itself.
        return key.sign(digest)

    @property
    def txt_record(self) -> str:
        return txt_record(self.private_key)


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[SigningKey, ...] = ()

    def for_domain(self, domain: str, algorithms: Iterable[str] | None = None) -> list[SigningKey]:
        """The domain's keys, rsa before ed25519 (receivers that check only the first DKIM
        signature mostly lack ed25519), then by selector."""
        wanted = set(algorithms) if algorithms is not None else set(_FILE_TAG)
        domain = _norm_domain(domain)
        found = [k for k in self.keys if k.domain == domain and k.algorithm in wanted]
        return sorted(found, key=lambda k: (k.algorithm != RSA_SHA256, k.selector))

    def __iter__(self) -> Iterator[SigningKey]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def _norm_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    return domain


def _parse_key_filename(path: Path) -> tuple[str, str]:
    """``<selector>.<rsa|ed25519>.pem`` -> (selector, algorithm)."""
    selector, _, tag = path.name[: -len(".pem")].rpartition(".")
    if not selector or tag not in _ALGORITHM_OF_TAG:
        raise DkimKeyError(f"{path}: key files are named <selector>.rsa.pem or <selector>.ed25519.pem")
    return selector, _ALGORITHM_OF_TAG[tag]


def _key_files(domain_dir: Path, selector: str) -> list[Path]:
    """The key files of one selector (normally at most one)."""
    found = []
    for path in sorted(domain_dir.glob("*.pem")):
        try:
            if _parse_key_filename(path)[0] == selector:
                found.append(path)
        except DkimKeyError:
            continue
    return found


def load_key(path: Path, domain: str) -> SigningKey:
    selector, algorithm = _parse_key_filename(path)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    key = SigningKey.from_pem(domain, selector, pem, path)
    if key.algorithm != algorithm:
        raise DkimKeyError(f"{path}: file name says {algorithm}, the key is {key.algorithm}")
    if isinstance(key.private_key, rsa.RSAPrivateKey) and (key.private_key.key_size < RECOMMENDED_RSA_BITS):
        log.warning("DKIM key %s has %d bits; 2048 recommended", path, key.private_key.key_size)
    warn_if_readable_by_others(path, "DKIM key")
    return key


def load_keys(keys_dir: Path | str) -> KeyRing:
    """Parse every key under ``keys_dir`` once (see the module doc for the layout)."""
    keys_dir = Path(keys_dir)
    if not keys_dir.is_dir():
        raise DkimKeyError(f"DKIM keys directory {keys_dir} does not exist")
    keys: list[SigningKey] = []
    for domain_dir in sorted(p for p in keys_dir.iterdir() if p.is_dir()):
        seen: dict[str, Path] = {}
        for path in sorted(domain_dir.glob("*.pem")):
            key = load_key(path, domain_dir.name)
            if key.selector in seen:
                raise DkimKeyError(f"{path} and {seen[key.selector]}: one selector can publish only one key")
            seen[key.selector] = path
            keys.append(key)
    return KeyRing(tuple(keys))


# -- DNS records and key generation -----------------------------------------------------------


def dns_txt_name(domain: str, selector: str) -> str:
    return f"{selector}._domainkey.{_norm_domain(domain)}"


def _public_key_b64(public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        # RFC 8463 §4: the raw 32-byte key, not an ASN.1 structure.
        der = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(der).decode("ascii")


def txt_record(private_key: PrivateKey) -> str:
    """The TXT record value that publishes the public half of ``private_key``."""
    k = "rsa" if isinstance(private_key, rsa.RSAPrivateKey) else "ed25519"
    return f"v=DKIM1; k={k}; p={_public_key_b64(private_key.public_key())}"


def zone_record(domain: str, selector: str, value: str) -> str:
    """A zone-file line; TXT strings are at most 255 bytes, so long keys are split."""
    chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{dns_txt_name(domain, selector)}. IN TXT ( {chunks} )"


def _normalise_algorithm(algorithm: str) -> str:
    algorithm = algorithm.lower()
    algorithm = _ALGORITHM_OF_TAG.get(algorithm, algorithm)
    if algorithm not in _FILE_TAG:
        raise DkimKeyError(f"unsupported DKIM algorithm {algorithm!r} (rsa-sha256, ed25519-sha256)")
    return algorithm


def keygen(
    domain: str,
    selector: str,
    algorithm: str = RSA_SHA256,
    keys_dir: Path | str = Path("var/dkim"),
    *,
    rsa_bits: int = RECOMMENDED_RSA_BITS,
) -> tuple[Path, str]:
    """Write a new key (mode 0600, never overwriting) and return (path, TXT record value)."""
    algorithm = _normalise_algorithm(algorithm)
    domain = _norm_domain(domain)
    if not _DOMAIN_RE.fullmatch(domain) or not _DOMAIN_RE.fullmatch(selector.lower()):
        raise DkimKeyError(f"not a usable domain/selector: {domain!r} / {selector!r}")
    domain_dir = Path(keys_dir) / domain
    domain_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = _key_files(domain_dir, selector)
    if existing:
        raise DkimKeyError(
            f"{existing[0]} exists: selector {selector} already has a key; "
            "refusing to overwrite (pick a new selector to rotate)"
        )
    key: PrivateKey
    if algorithm == RSA_SHA256:
        key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = domain_dir / f"{selector}.{_FILE_TAG[algorithm]}.pem"
    _write_exclusive(path, pem)
    return path, txt_record(key)


def _write_exclusive(path: Path, data: bytes) -> None:
    if not create_exclusive(path, data):
        raise DkimKeyError(f"{path} exists; refusing to overwrite")


class _TxtResolver(Protocol):
    def resolve(self, qname: str, rdtype: str) -> Iterable[Any]: ...


def check_dns(
    domain: str,
    selector: str,
    keys_dir: Path | str,
    resolver: _TxtResolver | None = None,
) -> tuple[bool, str]:
    """Look up ``<selector>._domainkey.<domain>`` TXT and compare it with our key."""
    domain = _norm_domain(domain)
    name = dns_txt_name(domain, selector)
    candidates = _key_files(Path(keys_dir) / domain, selector)
    if not candidates:
        return False, f"no key for {selector} in {Path(keys_dir) / domain}"
    try:
        key = load_key(candidates[0], domain)
    except DkimKeyError as exc:
        return False, str(exc)
    try:
        records = _lookup_txt(name, resolver or dns.resolver.Resolver())
    except dns.resolver.NXDOMAIN:
        return False, f"{name}: no such DNS name (NXDOMAIN); publish: {key.txt_record}"
    except dns.resolver.NoAnswer:
        return False, f"{name}: no TXT record; publish: {key.txt_record}"
    except dns.exception.DNSException as exc:
        return False, f"{name}: DNS lookup failed ({exc.__class__.__name__}: {exc})"
    return _compare_record(name, records, key)


def _lookup_txt(name: str, resolver: _TxtResolver) -> list[str]:
    # A TXT record longer than 255 bytes arrives as several strings: join them (RFC 6376 §3.6.2.2).
    answer = resolver.resolve(name, "TXT")
    return [b"".join(rdata.strings).decode("ascii", "replace") for rdata in answer]


def _compare_record(name: str, records: list[str], key: SigningKey) -> tuple[bool, str]:
    dkim_records = [r for r in records if "p=" in r]
    if not dkim_records:
        return False, f"{name}: TXT present but no DKIM key record ({records!r})"
    if len(dkim_records) > 1:
        return False, f"{name}: {len(dkim_records)} DKIM records; receivers may pick any one"
    try:
        tags = parse_tag_value(dkim_records[0].encode("ascii", "replace"))
    except InvalidTagValueList as exc:
        return False, f"{name}: unparsable record ({exc}): {dkim_records[0]!r}"
    problem = _record_problem(tags, key)
    if problem:
        return False, f"{name}: {problem}; expected: {key.txt_record}"
    flags = [flag.strip() for flag in tags.get(b"t", b"").split(b":")]
    testing = " (t=y: receivers may treat failures as testing)" if b"y" in flags else ""
    return True, f"{name}: DNS key matches {key.path}{testing}"


def _record_problem(tags: Mapping[bytes, bytes], key: SigningKey) -> str | None:
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        return f"v={tags[b'v'].decode(errors='replace')} is not DKIM1"
    k = tags.get(b"k", b"rsa").decode(errors="replace")
    if _ALGORITHM_OF_TAG.get(k) != key.algorithm:
        return f"k={k} but the key is {key.algorithm}"
    if b"h" in tags and b"sha256" not in [h.strip() for h in tags[b"h"].split(b":")]:
        return "h= does not allow sha256"
    p = re.sub(rb"\s+", b"", tags.get(b"p", b""))
    if not p:
        return "p= is empty (key revoked)"
    published = _published_key_b64(p, key.algorithm)
    if published is None:
        return "p= is not a valid public key"
    if published != _public_key_b64(key.private_key.public_key()):
        return "p= is a different public key"
    return None


def _published_key_b64(p: bytes, algorithm: str) -> str | None:
    """p= re-encoded the way we publish it, so that PKCS#1 and SPKI forms compare equal."""
    try:
        raw = base64.b64decode(p, validate=True)
        if algorithm == ED25519_SHA256:
            return _public_key_b64(ed25519.Ed25519PublicKey.from_public_bytes(raw))
        public = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        return None
    return _public_key_b64(public) if isinstance(public, rsa.RSAPublicKey) else None


# -- signing ------------------------------------------------------------------------------------


def signed_header_list(
    headers: Sequence[Sequence[bytes]],
    headers_to_sign: Iterable[bytes | str],
    oversign: Iterable[bytes | str] = OVERSIGNED_HEADERS,
) -> list[bytes]:
    """The h= list: every instance present, then one more of each oversigned name."""
    counts = Counter(header[0].lower() for header in headers)  # (name, value) pairs
    oversigned = frozenset(_lower_bytes(n) for n in oversign)
    return _header_list(counts, _signable_names(tuple(headers_to_sign)), oversigned)


def _header_list(
    counts: Mapping[bytes, int], names: Sequence[bytes], oversigned: frozenset[bytes]
) -> list[bytes]:
    present = [name for name in names for _ in range(counts.get(name, 0))]
    return present + [name for name in names if name in oversigned]


@functools.lru_cache(maxsize=64)
def _signable_names(headers_to_sign: tuple[bytes | str, ...]) -> tuple[bytes, ...]:
    """Lower-cased, de-duplicated names; cached because every message passes the same list."""
    names = tuple(dict.fromkeys(_lower_bytes(n) for n in headers_to_sign))
    forbidden = set(names) & set(dkim.DKIM.SHOULD_NOT)
    if forbidden:
        # dkimpy's SHOULD_NOT list (RFC 6376 §5.4.1): fields that relays add, change or drop.
        raise DkimError(f"refusing to sign {sorted(forbidden)}: not to be signed")
    return names


# Two or more spaces, written as two literal spaces plus " *" so that re searches for the
# literal two-space prefix at C speed instead of stopping at every single space.
_WSP_RUN = re.compile(b"   *")


def _compress_wsp(data: bytes) -> bytes:
    """Every run of spaces and tabs to one space (dkimpy's ``re.sub(b"[\\t ]+", b" ", ...)``)."""
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    return _WSP_RUN.sub(b" ", data)


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 relaxed body canonicalization; the same bytes as dkimpy's
    ``Relaxed.canonicalize_body`` (differential tests hold us to that) in ~1/10 of the time.

    dkimpy runs ``[\\t ]+\\r\\n`` and ``[\\t ]+`` substitutions that stop at every space of the
    body; those two regexes alone cost more than the RSA signature of a 20 KB newsletter. Here
    whitespace runs are compressed first, then the at most one space left before each CRLF goes
    (dkimpy strips first and compresses second; the order does not change the result).
    """
    body = _compress_wsp(body).replace(b" \r\n", b"\r\n")
    return correct_empty_body(strip_trailing_lines(body))


def relaxed_header(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """RFC 6376 relaxed canonicalization of one field; equal to dkimpy's
    ``Relaxed.canonicalize_headers`` item by item (differential tests), without its per-space
    regex: lower-case name, unfold (drop CRLF and bare LF, as ``re.sub(b"\\r?\\n", b"")``),
    compress whitespace, strip, CRLF."""
    unfolded = value.replace(b"\r\n", b"").replace(b"\n", b"")
    return name.lower().rstrip(), _compress_wsp(unfolded).strip() + b"\r\n"


def select_headers(headers: Sequence[Sequence[bytes]], include: Sequence[bytes]) -> list[Sequence[bytes]]:
    """dkimpy's ``select_headers`` (the n-th mention of a name takes its n-th instance from the
    bottom; missing instances are skipped) with one index pass instead of a scan per name."""
    positions: dict[bytes, list[int]] = {}
    for index, header in enumerate(headers):
        positions.setdefault(header[0].lower(), []).append(index)
    selected = []
    for name in include:
        stack = positions.get(name)
        if stack:
            selected.append(headers[stack.pop()])
    return selected


def _lower_bytes(name: bytes | str) -> bytes:
    return (name.encode("ascii") if isinstance(name, str) else name).strip().lower()


def _split_message(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """(headers, body) as dkimpy's rfc822_parse returns them, without re-joining the body."""
    if not crlf_only(message):
        # Bare CR or LF: dkimpy's whole-message parse, which makes bare LFs line ends, exactly
        # as its signer (and most receivers) would read them.
        return dkim.rfc822_parse(message)
    if message.startswith(b"\r\n"):
        return [], message[2:]  # no header block at all
    end = message.find(b"\r\n\r\n")
    head, body = (message, b"") if end < 0 else (message[: end + 2], message[end + 4 :])
    # Only the header block goes through dkimpy's line-by-line parser; the body stays one buffer.
    headers, _ = dkim.rfc822_parse(head)
    return headers, body


class DkimSigner:
    """Signs with pre-parsed keys; one instance serves every message."""

    def __init__(
        self,
        keyring: KeyRing | None = None,
        *,
        oversign: Iterable[bytes | str] = OVERSIGNED_HEADERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring or KeyRing()
        self._oversign = frozenset(_lower_bytes(n) for n in oversign)
        self._clock = clock

    def keys_for(
        self,
        domain: str,
        *,
        esp_domain: str | None = None,
        algorithms: Iterable[str] | None = None,
    ) -> list[SigningKey]:
        """The customer domain's keys, then the ESP domain's (an optional second signer)."""
        algorithms = list(algorithms) if algorithms is not None else None
        keys = self.keyring.for_domain(domain, algorithms)
        if esp_domain and _norm_domain(esp_domain) != _norm_domain(domain):
            keys += self.keyring.for_domain(esp_domain, algorithms)
        return keys

    def sign(
        self,
        message: bytes,
        keys: Sequence[SigningKey],
        *,
        headers_to_sign: Sequence[bytes | str] = DEFAULT_HEADERS_TO_SIGN,
    ) -> bytes:
        """DKIM-Signature header fields (folded, CRLF-terminated) to prepend to ``message``.

        ``message`` must be final: the signatures cover exactly these bytes. One signature per
        key, in the order given (so the first key's signature ends up on top).
        """
        if not keys:
            return b""
        try:
            headers, body = _split_message(message)
        except dkim.MessageFormatError as exc:
            raise DkimError(f"message cannot be parsed for signing: {exc}") from None
        counts = Counter(name.lower() for name, _ in headers)
        if not counts[b"from"]:
            raise DkimError("message has no From header; DKIM requires signing From")
        include = _header_list(counts, _signable_names(tuple(headers_to_sign)), self._oversign)
        if b"from" not in include:
            raise DkimError("headers_to_sign must include From")
        signed_block = _signed_header_block(headers, include)
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        timestamp = str(int(self._clock())).encode("ascii")
        return b"".join(_signature_header(key, signed_block, include, body_hash, timestamp) for key in keys)


def _signed_header_block(headers: list[list[bytes]], include: list[bytes]) -> bytes:
    """The canonicalized signed header fields as dkimpy's hash_headers feeds them to the hash.

    Computed once per message (it is the same for every key), and only the selected fields are
    canonicalized: selecting on raw names is the same as on canonical ones, since rfc822_parse
    leaves no whitespace in names.
    """
    canonical = (relaxed_header(h[0], h[1]) for h in select_headers(headers, include))
    return b"".join(name + b":" + value for name, value in canonical)


def _signature_header(
    key: SigningKey,
    signed_block: bytes,
    include: list[bytes],
    body_hash: bytes,
    timestamp: bytes,
) -> bytes:
    """One DKIM-Signature field, built the way dkimpy's DKIM.sign/gen_header build it."""
    domain = key.domain.encode("ascii")
    fields = [
        (b"v", b"1"),
        (b"a", key.algorithm.encode("ascii")),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode("ascii")),
        (b"t", timestamp),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        # A b= placeholder as long as dkimpy's makes the folding before b= the same as it will be
        # in the final header; relaxed canonicalization ignores the folding anyway.
        (b"b", b"0" * 60),
    ]
    folded = fold(_join_tags(fields), namelen=len(_HEADER_NAME))
    # dkimpy empties b= with its RE_BTAG regex; b= is our last tag and its placeholder has no
    # "b=" inside, so cutting after the last "b=" is the same (and 10x cheaper).
    unsigned = folded[: folded.rindex(b"b=") + 2]
    # As in dkimpy's hash_headers: the signature field itself is hashed last, canonicalized, with
    # b= empty and without its trailing CRLF.
    name, value = relaxed_header(_HEADER_NAME, b" " + unsigned)
    hasher = hashlib.sha256(signed_block)
    hasher.update(name + b":" + value.rstrip())
    fields[-1] = (b"b", base64.b64encode(key.sign_digest(hasher.digest())))
    folded = fold(_join_tags(fields) + b"\r\n", namelen=len(_HEADER_NAME))
    return _HEADER_NAME + b": " + folded


def _join_tags(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(b"=".join(f) for f in fields)


_BASE64_TAGS = (b"b=", b"bh=")


def fold(header: bytes, namelen: int = 0) -> bytes:
    """dkimpy's ``fold`` (greedy, 72 columns, breaking at the last space in reach) with one fix.

    When no space is in reach, dkimpy cuts the token at the column, inserting CRLF + space into
    it. RFC 6376 allows that whitespace only inside base64 (b=, bh=); cut inside a long d= or i=
    it corrupts the tag (dkimpy's own verifier then rejects the signature for domains of ~60+
    characters). Such tokens are kept whole here and the line runs long instead (SMTP allows
    998). For everything else the output is dkimpy's, byte for byte (tests compare).
    """
    width = 72 - namelen
    if len(header) <= width:
        return header
    if header.endswith(b"\r\n") and len(header) <= width + 2:
        return header
    lines: list[bytes] = []
    in_base64 = False
    while len(header) > width:
        cut = header.rfind(b" ", 0, width)
        if cut > 0:
            lines.append(header[:cut])
            header = header[cut + 1 :]
            in_base64 = False
        elif in_base64 or header.startswith(_BASE64_TAGS):
            lines.append(header[:width])
            header = header[width:]
            in_base64 = True
        else:
            cut = header.find(b" ", width)
            if cut < 0:
                break
            lines.append(header[:cut])
            header = header[cut + 1 :]
            in_base64 = False
        width = 71
    return b"\r\n ".join([*lines, header])


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    domain: str
    selector: str
    algorithm: str
    ok: bool
    reason: str = ""

    @property
    def result(self) -> str:
        return "pass" if self.ok else "fail"


def static_dnsfunc(records: Mapping[str, str | bytes]) -> DnsFunc:
    """A dkimpy ``dnsfunc`` answering from a dict {name: TXT value} (tests, offline checks)."""
    table = {name.lower().rstrip("."): value for name, value in records.items()}

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode("ascii") if isinstance(name, bytes) else name).lower().rstrip(".")
        value = table.get(key)
        return value.encode("ascii") if isinstance(value, str) else value

    return dnsfunc


class _Ed25519Check:
    """Stands in for a PyNaCl VerifyKey inside dkimpy's verifier: it records the outcome instead
    of raising ``nacl.exceptions.BadSignatureError`` (which dkimpy would fail to resolve
    without PyNaCl)."""

    def __init__(self, public_key: ed25519.Ed25519PublicKey) -> None:
        self._public_key = public_key
        self.verified = False

    def verify(self, digest: bytes, signature: bytes) -> None:
        try:
            self._public_key.verify(signature, digest)
            self.verified = True
        except InvalidSignature:
            self.verified = False


class _ErrorLog(logging.Handler):
    """Collects the errors dkimpy logs (its only report of why a key was refused)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []
        # A private logger outside the logging tree: nothing propagates to the app's handlers.
        self.logger = logging.Logger(f"{__name__}.verify", logging.ERROR)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_TIME_SLOP = 36000  # dkimpy's 10 h allowance for signers with wrong clocks


def _check_times(sig: Mapping[bytes, bytes], now: int) -> None:
    """dkimpy's t=/x= checks (validate_signature_fields), against ``now``."""
    t_sign = None
    if b"t" in sig:
        if not re.fullmatch(rb"\d+", sig[b"t"]):
            raise dkim.ValidationError(f"t= value is not a decimal integer ({sig[b't']!r})")
        t_sign = int(sig[b"t"])
        if t_sign > now + _TIME_SLOP:
            raise dkim.ValidationError(f"t= value is in the future ({sig[b't']!r})")
    if b"x" in sig:
        if not re.fullmatch(rb"\d+", sig[b"x"]):
            raise dkim.ValidationError(f"x= value is not a decimal integer ({sig[b'x']!r})")
        x_sign = int(sig[b"x"])
        if x_sign < now - _TIME_SLOP:
            raise dkim.ValidationError(f"x= value is past ({sig[b'x']!r})")
        if t_sign and x_sign < t_sign:
            raise dkim.ValidationError("x= value is less than t= value")


class _Verifier(dkim.DKIM):
    """dkimpy's DKIM verifier with an injectable clock and PyNaCl-free ed25519."""

    def __init__(
        self, message: bytes, *, now: float, minkey: int, timeout: float, logger: logging.Logger
    ) -> None:
        super().__init__(message, logger=logger, minkey=minkey, timeout=timeout)
        self._now = int(now)

    def verify_headerprep(self, idx: int = 0) -> Any:
        # dkimpy's verify_headerprep with the time checks taken out of validate_signature_fields.
        sigheaders = [(x, y) for x, y in self.headers if x.lower() == b"dkim-signature"]
        if len(sigheaders) <= idx:
            return False
        try:
            sig = parse_tag_value(sigheaders[idx][1])
        except InvalidTagValueList as exc:
            raise dkim.MessageFormatError(exc) from None
        self.signature_fields = sig
        dkim.validate_signature_fields({k: v for k, v in sig.items() if k not in (b"t", b"x")})
        _check_times(sig, self._now)
        self.domain = sig[b"d"]
        self.selector = sig[b"s"]
        include_headers = [x.lower() for x in re.split(rb"\s*:\s*", sig[b"h"])]
        self.include_headers = tuple(include_headers)
        return sig, include_headers, sigheaders

    def verify_sig(self, sig: Any, include_headers: Any, sig_header: Any, dnsfunc: Any) -> bool:
        name = sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."
        try:
            record = dnsfunc(name, timeout=self.timeout)
        except dkim.DnsTimeoutError as exc:
            self.logger.error(f"DnsTimeoutError: {name.decode(errors='replace')}: {exc}")
            return False
        tags = _record_tags(record)
        if tags is None or tags.get(b"k") != b"ed25519":
            # RSA (and every malformed record): dkimpy's own code, fed the record we fetched.
            def fetched(*_args: Any, **_kwargs: Any) -> bytes | str | None:
                return record

            return bool(super().verify_sig(sig, include_headers, sig_header, fetched))
        check = self._load_ed25519(tags)
        if check is None:
            return False
        passed = self.verify_sig_process(sig, include_headers, sig_header, dnsfunc)
        return bool(passed) and check.verified

    def _load_ed25519(self, tags: Mapping[bytes, bytes]) -> _Ed25519Check | None:
        """What dkimpy's evaluate_pk does for k=ed25519, with cryptography's key type."""
        service = tags.get(b"s", b"*")
        problem = None
        if tags.get(b"v", b"DKIM1") != b"DKIM1":
            problem = "bad version"
        elif service not in (b"*", b"email", b"tlsrpt"):
            problem = f"unknown service type in s= tag: {service!r}"
        else:
            try:
                raw = base64.b64decode(re.sub(rb"\s+", b"", tags.get(b"p", b"")), validate=True)
                public_key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            except ValueError as exc:
                problem = f"could not parse ed25519 public key: {exc}"
        if problem:
            self.logger.error(problem)
            return None
        check = _Ed25519Check(public_key)
        self.pk, self.keysize, self.ktag = check, 256, b"ed25519"
        self.seqtlsrpt = service == b"tlsrpt"
        return check


def _record_tags(record: bytes | str | None) -> dict[bytes, bytes] | None:
    if not record:
        return None
    try:
        raw = record.encode("ascii") if isinstance(record, str) else record
        return parse_tag_value(raw)
    except (InvalidTagValueList, UnicodeEncodeError):
        return None


def _signature_tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return parse_tag_value(value)
    except InvalidTagValueList:
        return {}


def verify(
    message: bytes,
    dnsfunc: DnsFunc = _dns_get_txt,
    *,
    now: float | None = None,
    minkey: int = 1024,
    timeout: float = 5,
) -> list[VerifyResult]:
    """Verify every DKIM-Signature of ``message`` (top first); [] when there is none.

    ``dnsfunc(name: bytes, timeout=...)`` returns the TXT value (dkimpy's interface);
    ``now`` (unix time) replaces the clock for the t=/x= checks.
    """
    errors = _ErrorLog()
    try:
        verifier = _Verifier(
            message,
            now=time.time() if now is None else now,
            minkey=minkey,
            timeout=timeout,
            logger=errors.logger,
        )
    except dkim.MessageFormatError as exc:
        raise DkimError(f"message cannot be parsed for verification: {exc}") from None
    values = [v for n, v in verifier.headers if n.lower() == b"dkim-signature"]
    return [_verify_one(verifier, idx, value, dnsfunc, errors) for idx, value in enumerate(values)]


def _verify_one(
    verifier: _Verifier, idx: int, value: bytes, dnsfunc: DnsFunc, errors: _ErrorLog
) -> VerifyResult:
    tags = _signature_tags(value)
    errors.messages.clear()
    try:
        ok = bool(verifier.verify(idx=idx, dnsfunc=dnsfunc))
        reason = "" if ok else (errors.messages[-1] if errors.messages else "signature mismatch")
    except dkim.DKIMException as exc:
        ok, reason = False, f"{exc.__class__.__name__}: {exc}"

    def tag(name: bytes) -> str:
        return re.sub(rb"\s+", b"", tags.get(name, b"")).decode("ascii", "replace")

    return VerifyResult(tag(b"d"), tag(b"s"), tag(b"a"), ok, reason)
