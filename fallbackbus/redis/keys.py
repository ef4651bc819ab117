"""Redis key names of one fallback list and the bookkeeping around it.

Every key of a list starts with the list's own key, so with Redis Cluster a list named with a hash
tag (``{domain.events}``) keeps its processing lists, dead letters and counters in one slot, which
the atomic claim and the MULTI blocks need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOMAIN_EVENTS = "domain.events"
COMMANDS = "commands"
_GLOB = re.compile(r"([*?\[\]\\])")
COUNTERS = ("fell_back", "republished", "dead_lettered", "requeued", "purged")


@dataclass(frozen=True, slots=True)
class ListKeys:
    name: str
    prefix: str = ""

    @property
    def source(self) -> str:
        """The list the buses LPUSH onto; replay takes from its other (oldest) end."""
        return f"{self.prefix}{self.name}"

    def processing(self, run_id: str) -> str:
        return f"{self.source}:processing:{run_id}"

    @property
    def processing_pattern(self) -> str:
        """A SCAN pattern for this list's processing lists (glob characters in names escaped)."""
        return _GLOB.sub(r"\\\1", self.source) + ":processing:*"

    @property
    def leases(self) -> str:
        """Sorted set: run id -> unix time at which its processing list may be recovered."""
        return f"{self.source}:leases"

    @property
    def dead(self) -> str:
        return f"{self.source}:dead"

    @property
    def stats(self) -> str:
        """Hash of counters, field ``{organization}|{service}|{counter}``."""
        return f"{self.source}:stats"

    @property
    def lock(self) -> str:
        return f"{self.source}:lock"


def stats_field(organization: str, service: str, counter: str) -> str:
    return f"{organization}|{service}|{counter}"


def parse_stats_field(field: str) -> tuple[str, str, str] | None:
    parts = field.rsplit("|", 2)
    if len(parts) != 3 or parts[2] not in COUNTERS:
        return None
    return parts[0], parts[1], parts[2]
