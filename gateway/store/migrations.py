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
]


def render(statement: str, dialect: str) -> str:
    if dialect == "postgresql":
        return statement.format(id="BIGSERIAL PRIMARY KEY", blob="BYTEA")
    return statement.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB")
