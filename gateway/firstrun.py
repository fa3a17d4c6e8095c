"""First run on the embedded defaults: what a newcomer needs to send a test mail.

Only in capture mode (`downstream.capture`), and only when the store has no customer yet: a
demo customer with a verified domain, an imprint, a confirmed campaign, a DKIM key, and a
password printed once on the terminal (never into the log).
"""

from __future__ import annotations

import secrets
import sys

from gateway.config import Config
from gateway.store import SqlStore
from gateway.store.passwords import hash_password

DEMO_CUSTOMER = "demo"
DEMO_DOMAIN = "demo.example"
DEMO_CAMPAIGN = "welcome-2026"
DEMO_IMPRINT = {
    "company": "Demo Versand GmbH",
    "legal_form": "GmbH",
    "representative": "Erika Mustermann",
    "street": "Hauptstraße 5",
    "postcode": "10115",
    "city": "Berlin",
    "country": "Germany",
    "email": "info@demo.example",
    "phone": "+49 30 1234567",
}


def first_run(config: Config, store: SqlStore) -> str | None:
    """Create the demo customer if there is no customer at all; returns its password."""
    if store.list_customers():
        return None
    password = secrets.token_urlsafe(12)
    store.add_customer(DEMO_CUSTOMER)
    store.set_password_hash(DEMO_CUSTOMER, hash_password(password))
    store.set_imprint(DEMO_CUSTOMER, DEMO_IMPRINT)
    domain = store.add_domain(DEMO_CUSTOMER, DEMO_DOMAIN, secrets.token_hex(16))
    store.mark_domain_verified(domain.customer_id, DEMO_DOMAIN, by="first-run")
    store.confirm_campaign(DEMO_CUSTOMER, DEMO_CAMPAIGN, by="first-run")
    store.set_unsubscribe(DEMO_CUSTOMER, f"https://{DEMO_DOMAIN}/unsubscribe")
    store.set_customer_status(DEMO_CUSTOMER, "active")
    if config.dkim.enabled:
        _demo_dkim_key(config)
    print(
        f"\nFirst run: created the demo customer {DEMO_CUSTOMER!r} (domain {DEMO_DOMAIN}, "
        f"campaign {DEMO_CAMPAIGN}).\n"
        f"  SMTP login: {DEMO_CUSTOMER}\n  SMTP password: {password}\n"
        "This password is shown only now. Send a test mail with the README's swaks command.\n",
        file=sys.stderr, flush=True,
    )
    return password


def _demo_dkim_key(config: Config) -> None:
    from gateway.dkim import DkimKeyError, keygen

    keys_dir = config.path(config.dkim.keys_dir)
    try:
        keygen(DEMO_DOMAIN, "demo", "rsa-sha256", keys_dir)
    except DkimKeyError:
        pass  # a key from an earlier first run: keep it
