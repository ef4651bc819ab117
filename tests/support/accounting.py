"""Prove that every message sent ended up somewhere.

The library's promise is at-least-once: a message is either delivered to RabbitMQ,
parked in a Redis fallback list (to be replayed later), or dead-lettered -- never
dropped. ``Ledger`` adds those three places up against what the test sent, so a fault
test ends with one ``assert_nothing_lost()`` whose failure message lists what is missing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import redis


def _fallback_id(entry: bytes | str) -> str | None:
    """``data.id`` of a fallback entry ``{"organization", "service", "message": {...}}``."""
    try:
        message = json.loads(entry)["message"]
        if isinstance(message, str | bytes):  # tolerate a message stored as a JSON string
            message = json.loads(message)
        return str(message["data"]["id"])
    except (ValueError, KeyError, TypeError):
        return None


class Ledger:
    """Sent ids versus where they were found: delivered, in fallback, dead-lettered."""

    def __init__(self, sent: Iterable[str] = ()) -> None:
        self.sent: list[str] = []
        self.received: Counter[str] = Counter()
        self.fallback: Counter[str] = Counter()
        self.dead_lettered: Counter[str] = Counter()
        self.malformed_fallback: list[bytes | str] = []
        self.record_sent(sent)

    def record_sent(self, ids: Iterable[str]) -> None:
        self.sent.extend(ids)

    def add_received(self, ids: Mapping[str, int] | Iterable[str]) -> None:
        """Ids delivered by RabbitMQ, e.g. ``QueueCounter.ids`` (a Counter) or a list."""
        self.received.update(ids)

    def add_dead_lettered(self, ids: Mapping[str, int] | Iterable[str]) -> None:
        self.dead_lettered.update(ids)

    def add_fallback(self, client: redis.Redis, *keys: str) -> int:
        """Read whole Redis fallback lists (without popping); returns how many entries were read."""
        count = 0
        for key in keys:
            entries: list[Any] = client.lrange(key, 0, -1)
            for entry in entries:
                count += 1
                message_id = _fallback_id(entry)
                if message_id is None:
                    self.malformed_fallback.append(entry)
                else:
                    self.fallback[message_id] += 1
        return count

    @property
    def found(self) -> Counter[str]:
        """Copies of each id across all three places."""
        return self.received + self.fallback + self.dead_lettered

    def lost(self) -> list[str]:
        """Sent ids found nowhere, in sending order."""
        found = self.found
        return [mid for mid in dict.fromkeys(self.sent) if mid not in found]

    def duplicate_count(self) -> int:
        """Extra copies beyond one per id (delivered twice, or delivered *and* in fallback)."""
        return sum(n - 1 for n in self.found.values() if n > 1)

    def unexpected(self) -> list[str]:
        """Ids found somewhere but never sent (leftovers from another test?)."""
        sent = set(self.sent)
        return sorted(mid for mid in self.found if mid not in sent)

    def summary(self) -> str:
        lost = self.lost()
        lines = [
            f"sent {len(set(self.sent))} distinct ids; lost {len(lost)}; "
            f"duplicates {self.duplicate_count()}",
            f"  delivered: {sum(self.received.values())} ({len(self.received)} distinct)",
            f"  in fallback: {sum(self.fallback.values())} ({len(self.fallback)} distinct)"
            + (f", {len(self.malformed_fallback)} unparseable" if self.malformed_fallback else ""),
            f"  dead-lettered: {sum(self.dead_lettered.values())}",
        ]
        if lost:
            lines.append(f"  lost ids (first 10): {lost[:10]}")
        if unexpected := self.unexpected():
            lines.append(f"  never-sent ids found (first 10): {unexpected[:10]}")
        return "\n".join(lines)

    def assert_nothing_lost(self, *, allow_duplicates: bool = True) -> None:
        lost = self.lost()
        if lost or (not allow_duplicates and self.duplicate_count()):
            raise AssertionError(
                ("messages lost" if lost else "duplicates found") + "\n" + self.summary()
            )
