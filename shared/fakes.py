"""In-memory fakes of shared ports, for unit tests (fakes, not mocks)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.events import Event


@dataclass(frozen=True)
class RawMessage:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str:
        return dict(self.headers)[name].decode()


@dataclass
class InMemoryPublisher:
    """Records what would have been published, in order."""

    events: list[Event] = field(default_factory=list)
    raw: list[RawMessage] = field(default_factory=list)

    async def publish(self, event: Event) -> None:
        self.events.append(event)

    async def publish_raw(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        self.raw.append(RawMessage(topic, value, key, tuple(headers)))

    def on(self, topic: str) -> list[RawMessage]:
        return [m for m in self.raw if m.topic == topic]
