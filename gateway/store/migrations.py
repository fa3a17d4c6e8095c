"""Schema migrations, run at start. One list, both engines.

Each migration is a list of statements written in the SQL both SQLite and PostgreSQL accept;
`{id}` stands for the engine's auto-increment primary key and `{blob}` for its bytes type.
Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: relay core: customers, sending domains, campaigns, message ledger
    [
        """CREATE TABLE customers (
            id {id},
            name TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL DEFAULT 'pending',
            status_reason TEXT,
            password_hash TEXT,
            imprint TEXT,
            unsubscribe_prefix TEXT,
            managed_unsubscribe INTEGER NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE domains (
            id {id},
            customer_id INTEGER NOT NULL REFERENCES customers(id),
            domain TEXT NOT NULL,
            token TEXT NOT NULL,
            verified_at DOUBLE PRECISION,
            verified_by TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (customer_id, domain)
        )""",
        """CREATE TABLE campaigns (
            id {id},
            customer_id INTEGER NOT NULL REFERENCES customers(id),
            campaign TEXT NOT NULL,
            confirmed_by TEXT NOT NULL,
            confirmed_at DOUBLE PRECISION NOT NULL,
            UNIQUE (customer_id, campaign)
        )""",
        """CREATE TABLE messages (
            mail_id TEXT PRIMARY KEY,
            customer_id INTEGER,
            campaign TEXT,
            mail_from TEXT,
            recipients TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            result TEXT NOT NULL,
            reply TEXT,
            queue_id TEXT,
            verdicts TEXT
        )""",
        "CREATE INDEX messages_customer_time ON messages (customer_id, created_at)",
    ],
    # 2: feedback intake: bounce/complaint events (raw + parse), suppressions and their history,
    # and a ledger index to find the messages sent to one recipient (Final-Recipient fallback,
    # "a later successful delivery resets the soft-bounce count")
    [
        """CREATE TABLE feedback_events (
            id {id},
            received_at DOUBLE PRECISION NOT NULL,
            source TEXT NOT NULL,
            envelope_from TEXT,
            envelope_to TEXT,
            kind TEXT NOT NULL,
            bounce_class TEXT NOT NULL,
            status TEXT,
            reason TEXT,
            feedback_type TEXT,
            recipients TEXT NOT NULL,
            mail_id TEXT,
            mail_id_status TEXT NOT NULL,
            attribution TEXT,
            customer_id INTEGER,
            campaign_id INTEGER,
            sent_at DOUBLE PRECISION,
            recipient TEXT,
            acted INTEGER NOT NULL DEFAULT 0,
            action TEXT,
            details TEXT,
            raw {blob},
            raw_size INTEGER NOT NULL,
            raw_truncated INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX feedback_events_mail_id ON feedback_events (mail_id)",
        "CREATE INDEX feedback_events_customer ON feedback_events (customer_id, kind, received_at)",
        "CREATE INDEX feedback_events_recipient ON feedback_events (recipient, kind, received_at)",
        """CREATE TABLE suppressions (
            id {id},
            customer_id INTEGER NOT NULL DEFAULT 0,
            address TEXT NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT,
            mail_id TEXT,
            feedback_id INTEGER,
            created_at DOUBLE PRECISION NOT NULL,
            created_by TEXT,
            UNIQUE (customer_id, address)
        )""",
        "CREATE INDEX suppressions_address ON suppressions (address)",
        "CREATE INDEX suppressions_mail_id ON suppressions (mail_id)",
        """CREATE TABLE suppression_history (
            id {id},
            customer_id INTEGER NOT NULL DEFAULT 0,
            address TEXT NOT NULL,
            action TEXT NOT NULL,
            reason TEXT,
            detail TEXT,
            mail_id TEXT,
            happened_at DOUBLE PRECISION NOT NULL,
            actor TEXT
        )""",
        "CREATE INDEX suppression_history_address ON suppression_history (address, happened_at)",
        "CREATE INDEX messages_recipients ON messages (lower(recipients))",
    ],
    # 3: double-opt-in evidence: the current consent state per (customer, address), and every
    # event that made it (subscribe, confirmation sent, confirm, revoke, import), append-only
    [
        """CREATE TABLE consent_records (
            id {id},
            customer_id INTEGER NOT NULL REFERENCES customers(id),
            address TEXT NOT NULL,
            generation INTEGER NOT NULL DEFAULT 1,
            source TEXT NOT NULL,
            list_name TEXT,
            subscribed_at DOUBLE PRECISION NOT NULL,
            subscribed_ip TEXT,
            subscribed_user_agent TEXT,
            confirmation_sent_at DOUBLE PRECISION,
            confirmed_at DOUBLE PRECISION,
            confirmed_ip TEXT,
            confirmed_user_agent TEXT,
            revoked_at DOUBLE PRECISION,
            revoked_reason TEXT,
            recorded_via TEXT NOT NULL,
            import_batch TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            UNIQUE (customer_id, address)
        )""",
        "CREATE INDEX consent_records_address ON consent_records (address)",
        """CREATE TABLE consent_events (
            id {id},
            customer_id INTEGER NOT NULL,
            address TEXT NOT NULL,
            event TEXT NOT NULL,
            happened_at DOUBLE PRECISION NOT NULL,
            ip TEXT,
            user_agent TEXT,
            source TEXT,
            via TEXT,
            detail TEXT,
            recorded_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX consent_events_address ON consent_events (customer_id, address, happened_at)",
    ],
    # 4: events to customers (DESIGN §13): the durable outbox, written in the transaction of
    # the change it reports, and one webhook endpoint per customer
    [
        """CREATE TABLE webhooks (
            customer_id INTEGER PRIMARY KEY REFERENCES customers(id),
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            event_types TEXT,
            enabled INTEGER NOT NULL DEFAULT 1,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            updated_by TEXT
        )""",
        """CREATE TABLE outbox_events (
            id {id},
            event_id TEXT NOT NULL UNIQUE,
            customer_id INTEGER NOT NULL,
            type TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            recipient TEXT,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            pending_since DOUBLE PRECISION NOT NULL,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            lease_owner TEXT,
            lease_until DOUBLE PRECISION,
            last_error TEXT,
            delivered_at DOUBLE PRECISION
        )""",
        "CREATE INDEX outbox_events_due ON outbox_events (state, next_attempt_at)",
        "CREATE INDEX outbox_events_customer ON outbox_events (customer_id, created_at)",
        "CREATE INDEX outbox_events_recipient ON outbox_events (recipient)",
        # Secrets the store itself needs on every node: the key of the erased-address hash
        """CREATE TABLE store_keys (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
    ],
    # 5: windowed counters shared by workers and nodes (gateway/store/windows.py): hits per
    # (scope, key, bucket width, bucket); bucket -1 is the key's lock row
    [
        """CREATE TABLE window_counters (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            width DOUBLE PRECISION NOT NULL,
            bucket BIGINT NOT NULL,
            hits INTEGER NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (scope, key, width, bucket)
        )""",
        "CREATE INDEX window_counters_expiry ON window_counters (expires_at)",
    ],
    # 6: failed-AUTH slow-down shared by workers and nodes: per client address and per login,
    # the earliest time the next failure may be answered (gateway/store/authslots.py)
    [
        """CREATE TABLE auth_slots (
            key TEXT PRIMARY KEY,
            next_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX auth_slots_next_at ON auth_slots (next_at)",
    ],
    # 7: volume and reputation (gateway/store/reputation.py): the append-only audit trail of
    # decisions about customers, per-customer limits/probation/breaker state, and the shared
    # quota counters (one row per customer, period and period start; see gateway/quota.py)
    [
        """CREATE TABLE audit_log (
            id {id},
            happened_at DOUBLE PRECISION NOT NULL,
            customer_id INTEGER,
            customer TEXT,
            action TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT,
            state_before TEXT,
            state_after TEXT
        )""",
        "CREATE INDEX audit_log_customer ON audit_log (customer_id, happened_at)",
        "CREATE INDEX audit_log_time ON audit_log (happened_at)",
        """CREATE TABLE customer_limits (
            customer_id INTEGER PRIMARY KEY REFERENCES customers(id),
            per_hour INTEGER NOT NULL DEFAULT 0,
            per_day INTEGER NOT NULL DEFAULT 0,
            activated_at DOUBLE PRECISION,
            probation_until DOUBLE PRECISION,
            graduated_at DOUBLE PRECISION,
            breaker_warning TEXT
        )""",
        """CREATE TABLE quota_counters (
            customer_id INTEGER NOT NULL,
            period TEXT NOT NULL,
            period_start BIGINT NOT NULL,
            used INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (customer_id, period, period_start)
        )""",
    ],
]


def render(statement: str, dialect: str) -> str:
    if dialect == "postgresql":
        return statement.format(id="BIGSERIAL PRIMARY KEY", blob="BYTEA")
    return statement.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB")
