"""TLS contexts, and a self-signed certificate for a first run."""

from __future__ import annotations

import datetime
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.keyfiles import create_exclusive


def ensure_self_signed(cert: Path, key: Path, hostname: str, wait: float = 10.0) -> bool:
    """Create a self-signed pair if neither file exists; returns True when it created one.

    Several processes may start at once (`serve --workers N`): each file appears whole or not
    at all (keyfiles.create_exclusive), the key decides who creates, and a process that lost
    waits until the winner's certificate is there too."""
    if cert.exists() or key.exists():
        if key.exists() and not cert.exists():
            _wait_for(cert, key, wait)  # perhaps another process, between its two files
        return False
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(hostname), x509.DNSName("localhost")]), critical=False
        )
        .sign(private, hashes.SHA256())
    )
    created = create_exclusive(
        key,
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    if not created:
        _wait_for(cert, key, wait)
        return False
    create_exclusive(cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return True


def _wait_for(cert: Path, key: Path, seconds: float) -> None:
    # Another process is writing the pair: its key is there, its certificate follows at once.
    deadline = time.monotonic() + seconds
    while not (cert.exists() and key.exists()) and time.monotonic() < deadline:
        time.sleep(0.02)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context
