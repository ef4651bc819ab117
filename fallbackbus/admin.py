"""What operators ask without writing SQL or redis-cli: what is waiting, did we lose anything,
what was parked and why, and what to do with it. The ``fallbackbus`` command line is built on it.

Accounting
----------
Each fallback list keeps counters per organization and service in its ``<list>:stats`` hash, and
every step that moves an entry moves the counters in the same MULTI or Lua script:

* a bus storing a message: ``fell_back`` +1 (the entry joins the list);
* replay publishing it: ``republished`` +1; parking it: ``dead_lettered`` +1 (it joins the dead
  letters); an entry written by petisco or by hand is counted ``fell_back`` +1 when replay first
  moves it, since no bus counted it;
* :func:`requeue`: ``dead_lettered`` -1 and ``requeued`` +1, the entry goes back to the list
  (a petisco entry replay could not read goes back as it was, and ``fell_back`` -1, since replay
  counts it again when it next moves it);
* :func:`purge`: ``dead_lettered`` -1 and ``purged`` +1, the entry is deleted.

Both write their audit row before they move anything, and check the audit database first.

So, per list, organization and service, at every instant::

    fell_back = republished + dead_lettered + purged + waiting

where *waiting* counts the entries in the list and in its processing lists (claimed by a run that
has not finished). ``dead_lettered`` also always equals the number of entries in the dead-letter
list (*parked*). :func:`accounting` checks both and reports a mismatch instead of hiding it: an
entry deleted or pushed by hand shows up there. ``requeued`` is informational, in no equation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis as redis_py

from fallbackbus.audit import AuditQueries, Outcome, SqlAuditStore
from fallbackbus.envelope import (
    DeadLetter,
    PoisonEntry,
    StoredEntry,
    decode,
    decode_dead_letter,
    encode,
    is_ours,
    peek_identity,
    unreadable_id,
)
from fallbackbus.errors import (
    AuditUnavailable,
    BrokerUnavailable,
    ConfigurationError,
    FallbackBusError,
    FallbackUnavailable,
)
from fallbackbus.rabbitmq.connector import RabbitMqConnector
from fallbackbus.redis import scripts
from fallbackbus.redis.client import redis_from_url
from fallbackbus.redis.keys import ListKeys, parse_stats_field, stats_field
from fallbackbus.redis.store import persistence_enabled
from fallbackbus.secrets import describe_error, mask_url
from fallbackbus.settings import Settings

CHUNK = 1000
"""Entries read per LRANGE: a list is scanned in chunks, never loaded whole."""
SNAPSHOT_ATTEMPTS = 5
"""Reads of a list retried while replay or publishers change it, before the result is flagged."""
NOT_PARKED = "not parked by replay (pushed by hand?)"
UNKNOWN = "?"
"""Organization or service of an entry too broken to say (the replay counts it under this too)."""


class NotFound(FallbackBusError):
    """What was asked for does not exist (a list, a dead letter, a message id)."""


class InvalidSelection(FallbackBusError, ValueError):
    """A dead-letter selection that cannot be used as given."""


class ConfirmationRequired(FallbackBusError):
    """:func:`purge` was called without ``confirm=True``; nothing was deleted.

    ``count`` is how many entries the selection would delete.
    """

    def __init__(self, list_key: str, count: int) -> None:
        self.list_key = list_key
        self.count = count
        super().__init__(
            f"purging {count} dead letter(s) of {list_key!r} deletes them for good; "
            "call again with confirm=True"
        )


# -- status ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Whether one of the three services answered; ``url`` has its password masked."""

    name: str
    url: str
    reachable: bool
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class AuditState:
    """The audit database: reachable, and at the schema revision this fallbackbus needs."""

    url: str
    reachable: bool
    revision: str | None
    head: str
    detail: str | None = None

    @property
    def schema_current(self) -> bool:
        return self.reachable and self.revision == self.head


@dataclass(frozen=True, slots=True)
class ProcessingList:
    """Entries a run has claimed and not finished. A live run renews its lease every batch; once
    the lease has expired (``expires_in_seconds`` < 0) the next run gives them back."""

    key: str
    run_id: str
    length: int
    age_seconds: float | None
    """Seconds since its run last claimed a batch (lease deadline minus the lease length)."""
    expires_in_seconds: float | None
    """``None`` when the run has no lease entry (it was removed by hand)."""


@dataclass(frozen=True, slots=True)
class ListStatus:
    name: str
    key: str
    length: int
    dead_letters: int
    processing: tuple[ProcessingList, ...]
    oldest_stored_at: datetime | None
    """When the oldest entry (the next to replay) was stored; ``None`` if empty or unknown."""
    oldest_age_seconds: float | None


@dataclass(frozen=True, slots=True)
class Status:
    lists: tuple[ListStatus, ...]
    redis: ServiceState
    redis_persistence: bool | None
    """True if AOF or RDB snapshots are on, False if both are off, None if Redis cannot tell."""
    rabbitmq: ServiceState
    audit: AuditState

    @property
    def problems(self) -> list[str]:
        """One line per service that is unreachable or unusable; empty when all is well."""
        found = [
            f"{state.name} at {state.url} is unreachable: {state.detail}"
            for state in (self.redis, self.rabbitmq)
            if not state.reachable
        ]
        if not self.audit.reachable:
            found.append(f"audit database at {self.audit.url} is unreachable: {self.audit.detail}")
        elif not self.audit.schema_current:
            found.append(
                f"audit database at {self.audit.url} has schema {self.audit.revision or 'none'}, "
                f"needs {self.audit.head}: run `fallbackbus db upgrade`"
            )
        return found


def status(settings: Settings | None = None) -> Status:
    """Lengths and ages of every configured list, and whether each service answers."""
    settings = settings or Settings.from_env()
    redis_state = ServiceState("Redis", mask_url(settings.redis_url), reachable=True)
    lists: tuple[ListStatus, ...] = ()
    persistence = None
    try:
        with _redis(settings) as client:
            persistence = persistence_enabled(client)
            lists = tuple(_list_status(client, settings, name) for name in settings.replay_lists)
    except FallbackUnavailable as exc:
        detail = describe_error(exc.__cause__ or exc)
        redis_state = ServiceState("Redis", redis_state.url, reachable=False, detail=detail)
    return Status(
        lists=lists,
        redis=redis_state,
        redis_persistence=persistence,
        rabbitmq=_rabbitmq_state(settings),
        audit=_audit_state(settings),
    )


def backlog(list_name: str, settings: Settings | None = None) -> int:
    """Entries waiting in ``list_name`` (not counting processing lists); checks Redis answers."""
    settings = settings or Settings.from_env()
    with _redis(settings) as client:
        return int(client.llen(_keys(settings, list_name).source))


def _list_status(client: redis_py.Redis, settings: Settings, name: str) -> ListStatus:
    keys = _keys(settings, name)
    tail = client.lindex(keys.source, -1)
    stored_at = _stored_at(_raw(tail), settings) if tail is not None else None
    return ListStatus(
        name=name,
        key=keys.source,
        length=int(client.llen(keys.source)),
        dead_letters=int(client.llen(keys.dead)),
        processing=_processing_lists(client, keys, settings),
        oldest_stored_at=stored_at,
        oldest_age_seconds=(
            (datetime.now(UTC) - stored_at).total_seconds() if stored_at is not None else None
        ),
    )


def _processing_lists(
    client: redis_py.Redis, keys: ListKeys, settings: Settings
) -> tuple[ProcessingList, ...]:
    seconds, micros = client.time()
    now = seconds + micros / 1_000_000  # Redis' clock: the one the leases were written with
    leases = cast(list[tuple[bytes, float]], client.zrange(keys.leases, 0, -1, withscores=True))
    deadlines = {_text(run): float(at) for run, at in leases}
    found = []
    for key in sorted(_processing_keys(client, keys)):
        run_id = key.rsplit(":", 1)[-1]
        deadline = deadlines.get(run_id)
        found.append(
            ProcessingList(
                key=key,
                run_id=run_id,
                length=int(client.llen(key)),
                age_seconds=(
                    None if deadline is None else now - (deadline - settings.replay_lease_seconds)
                ),
                expires_in_seconds=None if deadline is None else deadline - now,
            )
        )
    return tuple(found)


def _processing_keys(client: redis_py.Redis, keys: ListKeys) -> set[str]:
    # SCAN, not only the leases: a processing list whose lease was removed must still be seen.
    prefix = keys.processing("")
    return {
        _text(key)
        for key in client.scan_iter(match=keys.processing_pattern, count=CHUNK)
        if _text(key).startswith(prefix)
    }


def _stored_at(raw: bytes, settings: Settings) -> datetime | None:
    try:
        stored_at = decode(raw, max_bytes=settings.max_message_bytes).stored_at
        if stored_at is None:
            return None  # petisco's entries do not say when they were stored
        parsed = datetime.fromisoformat(stored_at)
    except (PoisonEntry, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _rabbitmq_state(settings: Settings) -> ServiceState:
    connector = RabbitMqConnector(settings=settings)
    try:
        lease = connector.connect()
    except BrokerUnavailable as exc:
        return ServiceState("RabbitMQ", connector.safe_url, reachable=False, detail=str(exc))
    connector.release(lease)
    connector.close()
    return ServiceState("RabbitMQ", connector.safe_url, reachable=True)


def _audit_state(settings: Settings) -> AuditState:
    store = SqlAuditStore.from_settings(settings)
    url = mask_url(store.engine.url.render_as_string(hide_password=True))
    try:
        revision = store.current_revision()
    except AuditUnavailable as exc:
        return AuditState(url, False, None, store.head_revision(), detail=str(exc))
    finally:
        store.dispose()
    return AuditState(url, True, revision, store.head_revision())


# -- accounting ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceBalance:
    """The accounting of one organization/service in one list (see the module docstring)."""

    list_key: str
    organization: str
    service: str
    fell_back: int = 0
    republished: int = 0
    dead_lettered: int = 0
    purged: int = 0
    requeued: int = 0
    waiting: int = 0
    """Entries in the list and its processing lists."""
    parked: int = 0
    """Entries in the dead-letter list; always equal to ``dead_lettered``."""
    uncounted: int = 0
    """Waiting entries written by petisco or by hand: counted as fell back once replay moves
    them, so they are in no equation yet."""
    consistent: bool = True
    """False if the list kept changing while it was read: the numbers may be off, read again."""

    @property
    def accounted(self) -> int:
        return self.republished + self.dead_lettered + self.purged + self.waiting

    @property
    def difference(self) -> int:
        """``fell_back - accounted``: > 0 entries missing, < 0 entries nobody counted."""
        return self.fell_back - self.accounted

    @property
    def balanced(self) -> bool:
        return self.difference == 0 and self.parked == self.dead_lettered

    def as_dict(self) -> dict[str, Any]:
        names = [f.name for f in self.__dataclass_fields__.values()]
        out = {name: getattr(self, name) for name in names}
        out.update(accounted=self.accounted, difference=self.difference, balanced=self.balanced)
        return out


def accounting(settings: Settings | None = None) -> list[ServiceBalance]:
    """Check ``fell_back = republished + dead_lettered + purged + waiting`` per list, organization
    and service, and ``dead_lettered = parked``. Lists are scanned in chunks of :data:`CHUNK`.

    Each list is read under WATCH: if replay or a publisher changed it meanwhile, it is read again
    (up to :data:`SNAPSHOT_ATTEMPTS` times) so a busy list is not reported as unbalanced; a list
    that never held still is returned with ``consistent=False``.
    """
    settings = settings or Settings.from_env()
    balances: list[ServiceBalance] = []
    with _redis(settings) as client:
        for name in settings.replay_lists:
            balances.extend(_list_accounting(client, _keys(settings, name)))
    return balances


@dataclass
class _Tally:
    counters: Counter[str] = field(default_factory=Counter)
    waiting: int = 0
    parked: int = 0
    uncounted: int = 0


def _list_accounting(client: redis_py.Redis, keys: ListKeys) -> list[ServiceBalance]:
    tallies: dict[tuple[str, str], _Tally] = {}
    consistent = False
    with client.pipeline(transaction=True) as pipe:
        for _ in range(SNAPSHOT_ATTEMPTS):
            tallies = {}
            try:
                # Every change to what is counted touches one of these keys: a store (source,
                # stats), a claim (source, leases), a finished batch (processing, stats or source),
                # a recovery (processing, source, leases), requeue and purge (dead, stats).
                pipe.watch(keys.source, keys.stats, keys.leases, keys.dead)  # type: ignore[no-untyped-call]
                processing = sorted(_processing_keys(pipe, keys))
                if processing:
                    pipe.watch(*processing)  # type: ignore[no-untyped-call]
                _count_counters(pipe, keys, tallies)
                for key in [keys.source, *processing]:
                    for raw in _chunks(pipe, key):
                        _count_waiting(raw, tallies)
                for raw in _chunks(pipe, keys.dead):
                    tally = _tally(tallies, peek_identity(_original(raw)))
                    tally.parked += 1
                pipe.multi()
                pipe.execute()  # raises WatchError if any watched key changed since WATCH
            except redis_py.WatchError:
                continue
            consistent = True
            break
    return [
        ServiceBalance(
            list_key=keys.source,
            organization=organization,
            service=service,
            fell_back=tally.counters["fell_back"],
            republished=tally.counters["republished"],
            dead_lettered=tally.counters["dead_lettered"],
            purged=tally.counters["purged"],
            requeued=tally.counters["requeued"],
            waiting=tally.waiting,
            parked=tally.parked,
            uncounted=tally.uncounted,
            consistent=consistent,
        )
        for (organization, service), tally in sorted(tallies.items())
    ]


def _count_counters(
    pipe: redis_py.client.Pipeline, keys: ListKeys, tallies: dict[tuple[str, str], _Tally]
) -> None:
    for raw_field, value in pipe.hgetall(keys.stats).items():
        parsed = parse_stats_field(_text(raw_field))
        if parsed is not None:
            organization, service, counter = parsed
            tallies.setdefault((organization, service), _Tally()).counters[counter] += int(value)


def _count_waiting(raw: bytes, tallies: dict[tuple[str, str], _Tally]) -> None:
    tally = _tally(tallies, peek_identity(raw))
    if is_ours(raw):
        tally.waiting += 1
    else:
        tally.uncounted += 1


def _tally(tallies: dict[tuple[str, str], _Tally], identity: dict[str, Any]) -> _Tally:
    # Grouped as the replay counts: under "?" when the entry does not say.
    key = (identity.get("organization", UNKNOWN), identity.get("service", UNKNOWN))
    return tallies.setdefault(key, _Tally())


def _chunks(client: redis_py.Redis, key: str) -> Iterator[bytes]:
    start = 0
    while True:
        chunk = client.lrange(key, start, start + CHUNK - 1)
        yield from map(_raw, chunk)
        if len(chunk) < CHUNK:
            return
        start += CHUNK


# -- dead letters ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """One parked entry as operators see it. ``index`` is its position in the dead-letter list,
    0 being the most recently parked; the identity fields are ``None`` if the entry does not say."""

    index: int
    message_id: str | None
    message_type: str | None
    organization: str | None
    service: str | None
    reason: str
    dead_at: str
    run_id: str | None
    size: int
    """Bytes of the parked entry."""


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    list_key: str
    total: int
    offset: int
    entries: tuple[DeadLetterView, ...]


@dataclass(frozen=True, slots=True)
class Selector:
    """Which dead letters an action takes: by ``indexes`` (as :func:`list_dead_letters` shows
    them), by ``message_ids`` (every copy of each), or ``all_entries``. Exactly one of them."""

    indexes: tuple[int, ...] = ()
    message_ids: tuple[str, ...] = ()
    all_entries: bool = False

    def __post_init__(self) -> None:
        given = sum(map(bool, (self.indexes, self.message_ids, self.all_entries)))
        if given != 1:
            raise InvalidSelection(
                "select dead letters by index, by message id, or all of them (exactly one)"
            )
        negative = [i for i in self.indexes if i < 0]
        if negative:
            raise InvalidSelection(f"a dead-letter index is 0 or more, got {negative[0]}")


@dataclass(frozen=True, slots=True)
class ActionReport:
    """What :func:`requeue` or :func:`purge` did. ``skipped`` entries were gone by the time they
    were to move (another operator took them first); their audit rows were already written."""

    action: str
    list_key: str
    moved: tuple[DeadLetterView, ...]
    skipped: tuple[DeadLetterView, ...] = ()


def list_dead_letters(
    list_name: str, *, limit: int = 50, offset: int = 0, settings: Settings | None = None
) -> DeadLetterPage:
    """One page of the dead letters of ``list_name``, most recently parked first."""
    if limit < 1 or offset < 0:
        raise InvalidSelection(f"need limit >= 1 and offset >= 0, got {limit} and {offset}")
    settings = settings or Settings.from_env()
    with _redis(settings) as client:
        keys = _existing_keys(client, settings, list_name)
        raws = client.lrange(keys.dead, offset, offset + limit - 1)
        total = int(client.llen(keys.dead))
    views = tuple(_view(offset + i, _raw(raw)) for i, raw in enumerate(raws))
    return DeadLetterPage(list_key=keys.source, total=total, offset=offset, entries=views)


def requeue(
    list_name: str, selector: Selector, *, settings: Settings | None = None
) -> ActionReport:
    """Move the selected dead letters back to the oldest end of their list, to be replayed next
    (the oldest parked replayed first), with their attempts reset; one ``requeued`` audit row each.
    """
    return _act("requeued", list_name, selector, settings or Settings.from_env())


def purge(
    list_name: str,
    selector: Selector,
    *,
    confirm: bool = False,
    settings: Settings | None = None,
) -> ActionReport:
    """Delete the selected dead letters for good, one ``purged`` audit row each.

    Without ``confirm=True`` nothing is deleted: :class:`ConfirmationRequired` says how many would
    be. A missing index or message id raises :class:`NotFound` before anything changes.
    """
    settings = settings or Settings.from_env()
    if not confirm:
        with _redis(settings) as client:
            keys = _existing_keys(client, settings, list_name)
            count = (
                int(client.llen(keys.dead))
                if selector.all_entries
                else len(_selected(client, keys, selector))
            )
        raise ConfirmationRequired(keys.source, count)
    return _act("purged", list_name, selector, settings)


@dataclass(frozen=True, slots=True)
class _Picked:
    index: int
    raw: bytes


def _act(action: str, list_name: str, selector: Selector, settings: Settings) -> ActionReport:
    store = SqlAuditStore.from_settings(settings)
    moved: list[DeadLetterView] = []
    skipped: list[DeadLetterView] = []
    try:
        # Checked first, so an unusable database (down, or schema behind) changes nothing.
        store.ping()
        with _redis(settings) as client:
            keys = _existing_keys(client, settings, list_name)
            script = client.register_script(scripts.MOVE_DEAD_LETTERS)
            batches: Iterable[list[_Picked]] = (
                _all_in_chunks(client, keys)
                if selector.all_entries
                else [_selected(client, keys, selector)]
            )
            for batch in batches:
                length = int(client.llen(keys.dead))
                prepared = [_prepare(action, picked, keys, settings) for picked in batch]
                # The audit row first, as replay audits before it deletes: an action (above all
                # a purge, which cannot be undone) must never happen without its row.
                store.record(None, [outcome for _, _, outcome in prepared])
                args: list[bytes | str | int] = []
                for picked, (restored, counters, _) in zip(batch, prepared, strict=True):
                    args += [picked.raw, 1 if picked.index < length / 2 else -1, restored]
                    args.append(json.dumps(counters))
                done = set(script(keys=[keys.dead, keys.source, keys.stats], args=args))
                for number, picked in enumerate(batch, start=1):
                    view = _view(picked.index, picked.raw)
                    (moved if number in done else skipped).append(view)
    finally:
        store.dispose()
    return ActionReport(action, keys.source, tuple(moved), tuple(skipped))


def _all_in_chunks(client: redis_py.Redis, keys: ListKeys) -> Iterator[list[_Picked]]:
    # From the most recently parked to the oldest: each chunk is pushed onto the source's oldest
    # end after the one before, so the oldest parked entry ends up replayed first. Bounded by the
    # length at the start, so entries parked meanwhile cannot keep this going forever.
    remaining = int(client.llen(keys.dead))
    while remaining > 0:
        chunk = client.lrange(keys.dead, 0, min(CHUNK, remaining) - 1)
        if not chunk:
            return
        remaining -= len(chunk)
        yield [_Picked(index, _raw(raw)) for index, raw in enumerate(chunk)]


def _selected(client: redis_py.Redis, keys: ListKeys, selector: Selector) -> list[_Picked]:
    picked: list[_Picked] = []
    if selector.indexes:
        length = int(client.llen(keys.dead))
        missing = [i for i in selector.indexes if i >= length]
        if missing:
            shown = ", ".join(map(str, missing))
            raise NotFound(f"{keys.dead!r} has {length} dead letter(s): no index {shown}")
        for index in sorted(set(selector.indexes)):
            raw = client.lindex(keys.dead, index)
            if raw is not None:
                picked.append(_Picked(index, _raw(raw)))
        return picked
    wanted = set(selector.message_ids)
    found: set[str] = set()
    for index, raw in enumerate(_chunks(client, keys.dead)):
        message_id = peek_identity(_original(raw)).get("message_id")
        if message_id in wanted:
            picked.append(_Picked(index, raw))
            found.add(message_id)
    if missing_ids := sorted(wanted - found):
        raise NotFound(f"no dead letter in {keys.dead!r} has message id {', '.join(missing_ids)}")
    return picked


def _prepare(
    action: str, picked: _Picked, keys: ListKeys, settings: Settings
) -> tuple[bytes, dict[str, int], Outcome]:
    """The entry to push back (``b""`` for none), the counters to move, and the audit row."""
    letter = _letter(picked.raw)
    original = _original(picked.raw)
    reason = letter.reason if letter is not None else NOT_PARKED
    ident = peek_identity(original)
    organization = ident.get("organization", UNKNOWN)
    service = ident.get("service", UNKNOWN)
    counters: Counter[str] = Counter()
    if letter is not None:
        # Parked by replay, so counted as dead-lettered; an entry pushed by hand never was.
        counters[stats_field(organization, service, "dead_lettered")] -= 1
        counters[stats_field(organization, service, action)] += 1
    try:
        entry: StoredEntry | None = decode(original, max_bytes=settings.max_message_bytes)
    except PoisonEntry:
        entry = None
    restored = b""
    if action == "requeued":
        restored = (
            original  # as it is: replay will park it again, with the same reason
            if entry is None
            # Rewritten in our envelope with the attempts reset, so it gets a full set of tries
            # (the body is carried over byte for byte).
            else encode(
                entry.outgoing, reason=f"requeued after: {reason}", stored_at=entry.stored_at
            )
        )
        # Counted as fell back once while it is one of ours in the list: replay counts a foreign
        # entry when it first moves it, and counted this one already if it parked it.
        fell_back = int(is_ours(restored)) - int(letter is not None)
        counters[stats_field(organization, service, "fell_back")] += fell_back
    outcome = Outcome(
        message_id=ident.get("message_id") or unreadable_id(original),
        status=action,
        source_list=keys.source,
        message_type=ident.get("message_type"),
        organization=ident.get("organization"),
        service=ident.get("service"),
        routing_key=entry.outgoing.routing_key if entry is not None else None,
        reason=f"{action} by an operator; it was parked because: {reason}",
        attempts=entry.attempts if entry is not None else 0,
    )
    return restored, {name: delta for name, delta in counters.items() if delta}, outcome


def _view(index: int, raw: bytes) -> DeadLetterView:
    letter = _letter(raw)
    ident = peek_identity(_original(raw))
    return DeadLetterView(
        index=index,
        message_id=ident.get("message_id"),
        message_type=ident.get("message_type"),
        organization=ident.get("organization"),
        service=ident.get("service"),
        reason=mask_url(letter.reason) if letter is not None else NOT_PARKED,
        dead_at=letter.dead_at if letter is not None else "",
        run_id=letter.run_id if letter is not None else None,
        size=len(_original(raw)),
    )


def _letter(raw: bytes) -> DeadLetter | None:
    """The dead letter replay wrote, or None for anything else found in the list."""
    try:
        return decode_dead_letter(raw)
    except (ValueError, KeyError, TypeError):
        return None


def _original(raw: bytes) -> bytes:
    """The parked entry (what requeue restores); something pushed by hand is taken whole."""
    letter = _letter(raw)
    return letter.original if letter is not None else raw


# -- audit database --------------------------------------------------------------------------


@contextmanager
def audit_queries(settings: Settings | None = None) -> Iterator[AuditQueries]:
    """Queries on the audit database, checked first to be reachable and at the current schema."""
    store = SqlAuditStore.from_settings(settings or Settings.from_env())
    try:
        store.ping()
        yield AuditQueries(store)
    finally:
        store.dispose()


@dataclass(frozen=True, slots=True)
class Upgrade:
    url: str
    before: str | None
    after: str


def upgrade_database(settings: Settings | None = None) -> Upgrade:
    """Create or upgrade the audit schema to the revision this fallbackbus needs."""
    store = SqlAuditStore.from_settings(settings or Settings.from_env())
    try:
        before = store.current_revision()
        store.upgrade()
        after = store.current_revision()
    finally:
        store.dispose()
    url = mask_url(store.engine.url.render_as_string(hide_password=True))
    return Upgrade(url=url, before=before, after=after or store.head_revision())


# -- Redis -----------------------------------------------------------------------------------


@contextmanager
def _redis(settings: Settings) -> Iterator[redis_py.Redis]:
    """A bounded client; any Redis error inside leaves as :class:`FallbackUnavailable`."""
    try:
        client = redis_from_url(settings=settings)
    except ValueError:
        # ``from None``: the parse error can quote the URL, password included.
        raise ConfigurationError(f"not a Redis URL: {mask_url(settings.redis_url)!r}") from None
    try:
        yield client
    except redis_py.RedisError as exc:
        raise FallbackUnavailable(
            f"Redis at {mask_url(settings.redis_url)}: {describe_error(exc)}"
        ) from exc
    finally:
        with suppress(redis_py.RedisError):
            client.close()


def _keys(settings: Settings, list_name: str) -> ListKeys:
    return ListKeys(list_name, settings.redis_key_prefix)


def _existing_keys(client: redis_py.Redis, settings: Settings, list_name: str) -> ListKeys:
    keys = _keys(settings, list_name)
    if list_name not in settings.replay_lists and not client.exists(
        keys.source, keys.dead, keys.stats
    ):
        raise NotFound(f"no list {list_name!r} (configured: {', '.join(settings.replay_lists)})")
    return keys


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    # The clients here never decode responses: every value is bytes, as stored.
    return value if isinstance(value, bytes) else value.encode()


__all__ = [
    "ActionReport",
    "AuditState",
    "ConfirmationRequired",
    "DeadLetterPage",
    "DeadLetterView",
    "InvalidSelection",
    "ListStatus",
    "NotFound",
    "ProcessingList",
    "Selector",
    "ServiceBalance",
    "ServiceState",
    "Status",
    "Upgrade",
    "accounting",
    "audit_queries",
    "backlog",
    "list_dead_letters",
    "purge",
    "requeue",
    "status",
    "upgrade_database",
]
