"""DKIM as the last step of the engine: pick the keys for the From domain and sign.

Keys are loaded once per (re)load of the config. The signing domain aligns with the From
domain (relaxed alignment: the From domain itself, else its nearest parent with a key), and
an optional second signature uses the ESP's own domain.
"""

from __future__ import annotations

from email.utils import getaddresses
from typing import Any

from gateway import metrics
from gateway.core.message import header_values, prepend
from gateway.core.signer import SigningUnavailable
from gateway.dkim import DkimError, DkimSigner, SigningKey, load_keys


def from_domain(data: bytes) -> str:
    values = header_values(data, "From")
    addresses = getaddresses(values[:1])
    if not addresses or "@" not in addresses[0][1]:
        return ""
    return addresses[0][1].rsplit("@", 1)[1].strip().lower().rstrip(".")


class MessageSigner:
    def __init__(
        self, signer: DkimSigner, *, algorithms: list[str], esp_domain: str | None, missing_key: str
    ) -> None:
        self.signer = signer
        self.algorithms = algorithms
        self.esp_domain = esp_domain
        self.missing_key = missing_key

    @classmethod
    def from_config(cls, config: Any) -> MessageSigner:
        keys_dir = config.path(config.dkim.keys_dir)
        # An empty state directory is a normal first start: no keys yet, `missing_key` decides.
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        keyring = load_keys(keys_dir)
        return cls(
            DkimSigner(keyring),
            algorithms=list(config.dkim.algorithms),
            esp_domain=config.dkim.esp_domain,
            missing_key=config.dkim.missing_key,
        )

    def keys_for(self, domain: str) -> list[SigningKey]:
        labels = domain.split(".")
        for i in range(0, max(1, len(labels) - 1)):
            candidate = ".".join(labels[i:])
            keys = self.signer.keys_for(candidate, esp_domain=self.esp_domain, algorithms=self.algorithms)
            if any(k.domain == candidate for k in keys):
                return keys
        return []

    def sign_message(self, data: bytes) -> tuple[bytes, dict[str, str]]:
        """The signed bytes and what happened (for the log line)."""
        signature, outcome = self.signature(data)
        return (prepend(signature, data) if signature else data), outcome

    def signature(self, data: bytes) -> tuple[bytes, dict[str, str]]:
        """The DKIM-Signature fields to put on top of `data` (b"" when it stays unsigned), and
        what happened (for the log line)."""
        domain = from_domain(data)
        keys = self.keys_for(domain) if domain else []
        if not keys:
            if self.missing_key == "tempfail":
                raise SigningUnavailable(f"no DKIM key for From domain {domain or '(none)'}")
            metrics.DKIM_UNSIGNED.inc()
            return b"", {"result": "unsigned", "domain": domain or "(none)", "reason": "no key"}
        try:
            signature = self.signer.sign(data, keys)
        except DkimError as exc:  # e.g. no From header: nothing we may relay unsigned
            raise SigningUnavailable(f"cannot DKIM-sign: {exc}") from exc
        return signature, {
            "result": "signed",
            "signatures": ",".join(f"{k.domain}/{k.selector}/{k.algorithm}" for k in keys),
        }
