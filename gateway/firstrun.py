"""First run on the embedded defaults: what a newcomer needs to send a test mail.

Only in capture mode (`downstream.capture`), and only when the store has no customer yet: a
demo customer with a verified domain, an imprint, a confirmed campaign, a DKIM key, and a
password printed once on the terminal (never into the log).
"""

from __future__ import annotations

import secrets
import string
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


DEMO_MESSAGE = (
    "From: Demo Versand <news@demo.example>\r\n"
    "To: reader@example.org\r\n"
    "Subject: Willkommen / Welcome\r\n"
    "Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
    "Message-ID: <welcome-1@demo.example>\r\n"
    "X-Campaign-ID: welcome-2026\r\n"
    "List-Unsubscribe: <https://demo.example/unsubscribe?u=1>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Hallo! This is the demo newsletter.\r\n"
    "\r\n"
    "Abmelden / unsubscribe: https://demo.example/unsubscribe?u=1\r\n"
    "\r\n"
    "Demo Versand GmbH, Hauptstraße 5, 10115 Berlin, info@demo.example\r\n"
    "--b1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "<html><body><p>Hallo! This is the demo newsletter.</p>\r\n"
    '<p><a href="https://demo.example/unsubscribe?u=1">Abmelden / unsubscribe</a></p>\r\n'
    "<p>Demo Versand GmbH<br>Hauptstra&szlig;e 5<br>10115 Berlin<br>info@demo.example</p>\r\n"
    "</body></html>\r\n"
    "--b1--\r\n"
).encode()


def first_run(config: Config, store: SqlStore) -> str | None:
    """Create the demo customer if there is no customer at all; returns its password."""
    if store.list_customers():
        return None
    # Letters and digits only: a leading "-" would read as an option to swaks and friends.
    alphabet = string.ascii_letters + string.digits
    password = "".join(secrets.choice(alphabet) for _ in range(20))
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
    demo_message = config.path("var/demo-message.eml")
    demo_message.parent.mkdir(parents=True, exist_ok=True)
    demo_message.write_bytes(DEMO_MESSAGE)
    print(
        f"\nFirst run: created the demo customer {DEMO_CUSTOMER!r} (domain {DEMO_DOMAIN}, "
        f"campaign {DEMO_CAMPAIGN}).\n"
        f"  SMTP login: {DEMO_CUSTOMER}\n  SMTP password: {password}\n"
        f"This password is shown only now. A compliant test mail is in {demo_message};\n"
        "send it with the README's swaks command.\n",
        file=sys.stderr,
        flush=True,
    )
    return password


def _demo_dkim_key(config: Config) -> None:
    from gateway.dkim import DkimKeyError, keygen

    keys_dir = config.path(config.dkim.keys_dir)
    try:
        keygen(DEMO_DOMAIN, "demo", "rsa-sha256", keys_dir)
    except DkimKeyError:
        pass  # a key from an earlier first run: keep it
