"""Store methods for double-opt-in consent records (mixed into SqlStore)."""

from __future__ import annotations


class ConsentStoreMixin:
    """Filled in by the consent work; uses self.execute / self.transaction of SqlStore."""
