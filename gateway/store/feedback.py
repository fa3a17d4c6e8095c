"""Store methods for bounces, complaints and suppressions (mixed into SqlStore)."""

from __future__ import annotations


class FeedbackStoreMixin:
    """Filled in by the feedback work; uses self.execute / self.transaction of SqlStore."""
