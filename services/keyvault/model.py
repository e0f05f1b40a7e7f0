"""keyvault's records: one subject's data key for one dataset, as stored (wrapped by a KEK), and its states."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

KeyState = Literal["active", "disabled", "destroyed"]


@dataclass(frozen=True)
class KeyRecord:
    """One subject's data key for one dataset, as stored: wrapped by a KEK, or gone once destroyed."""

    subject_id: str
    dataset: str
    key_id: str
    kek_id: str
    wrapped: bytes | None
    state: KeyState
    created_at: datetime
    disabled_at: datetime | None = None
    purge_at: datetime | None = None
    destroyed_at: datetime | None = None
    request_id: str | None = None

    def destroyed(self, at: datetime, request_id: str | None) -> KeyRecord:
        return replace(self, wrapped=None, state="destroyed", destroyed_at=at, request_id=request_id or self.request_id)

    def disabled(self, at: datetime, purge_at: datetime, request_id: str | None) -> KeyRecord:
        return replace(self, state="disabled", disabled_at=at, purge_at=purge_at, request_id=request_id)
