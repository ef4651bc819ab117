"""Fallback entries: the JSON envelope a message is stored in while RabbitMQ cannot take it.

An entry is ``{"organization", "service", "message": <body>}`` as petisco writes it, plus our own
optional keys ``reason``, ``stored_at`` and ``attempts``. The body is embedded as raw bytes and
read back as the raw span of the ``message`` value, so a replayed message is the stored body byte
for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fallbackbus.errors import InvalidMessage
from fallbackbus.messages import KIND_COMMAND, KIND_DOMAIN_EVENT, Outgoing

_DECODER = json.JSONDecoder()
_JSON_SPACE = " \t\n\r"
_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]  # public, untyped
_KINDS = (KIND_DOMAIN_EVENT, KIND_COMMAND)


class PoisonEntry(ValueError):
    """A stored entry that can never be published; ``reason`` says why (goes to the audit)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A decoded entry: what to republish and how many reachable-broker attempts it has had."""

    outgoing: Outgoing
    attempts: int
    reason: str | None
    stored_at: str | None


def encode(
    outgoing: Outgoing, *, reason: str, attempts: int = 0, stored_at: str | None = None
) -> bytes:
    """Serialize ``outgoing`` as a fallback entry, embedding its body untouched."""
    when = stored_at or datetime.now(UTC).isoformat(timespec="microseconds")
    head = json.dumps({"organization": outgoing.organization, "service": outgoing.service})
    tail = json.dumps({"reason": reason, "stored_at": when, "attempts": attempts})
    return f'{head[:-1]}, "message": '.encode() + outgoing.body + f", {tail[1:]}".encode()


def decode(raw: bytes | str, *, max_bytes: int) -> StoredEntry:
    """Decode a stored entry, or raise :class:`PoisonEntry` with the reason it can never be sent."""
    try:
        entry = _decode(raw, max_bytes=max_bytes)
        entry.outgoing.check_names()
    except RecursionError:
        raise PoisonEntry("entry is JSON nested too deeply to read") from None
    except InvalidMessage as exc:
        raise PoisonEntry(str(exc)) from None
    return entry


def _decode(raw: bytes | str, *, max_bytes: int) -> StoredEntry:
    if len(raw) > max_bytes:
        raise PoisonEntry(f"entry is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise PoisonEntry("entry is not UTF-8") from None
    if not text.lstrip().startswith("{"):
        raise PoisonEntry("entry is not a JSON object")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            raise PoisonEntry("entry has trailing data after the JSON object") from None
        raise PoisonEntry(f"entry is not valid JSON ({exc})") from None
    except ValueError as exc:  # e.g. an integer over Python's 4,300-digit conversion limit
        raise PoisonEntry(f"entry cannot be read as JSON ({exc})") from None
    if not doc:  # a dict: the text starts with "{" and is valid JSON
        raise PoisonEntry("entry is an empty JSON object")
    organization = _field(doc, "organization", str)
    service = _field(doc, "service", str)
    if not organization or not service:
        raise PoisonEntry(
            f"entry has no string {'organization' if not organization else 'service'!r}"
        )
    if "message" not in doc:
        raise PoisonEntry("entry has no 'message'")
    body, data = _body(text, doc["message"])
    kind = data.get("type_message")
    if kind not in _KINDS:
        raise PoisonEntry(f"unknown message kind {kind!r}")
    message_id = data.get("id")
    message_type = data.get("type")
    version = data.get("version", 1)
    if not isinstance(message_id, str) or not message_id:
        raise PoisonEntry("message has no string 'data.id'")
    if not isinstance(message_type, str) or not message_type:
        raise PoisonEntry("message has no string 'data.type'")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PoisonEntry(f"message version {version!r} is not a positive integer")
    attempts = _field(doc, "attempts", int) or 0
    return StoredEntry(
        outgoing=Outgoing(
            message_id=message_id,
            type=message_type,
            kind=kind,
            version=version,
            organization=organization,
            service=service,
            body=body,
        ),
        attempts=attempts if attempts >= 0 else 0,
        reason=_field(doc, "reason", str),
        stored_at=_field(doc, "stored_at", str),
    )


def peek_identity(raw: bytes | str) -> dict[str, Any]:
    """Best-effort id/type/organization/service of any entry, poison included, for the audit."""
    try:
        doc = json.loads(raw)
        data = doc["message"]
        if isinstance(data, str):
            data = json.loads(data)
        data = data.get("data", {})
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return {}
    if not isinstance(doc, dict) or not isinstance(data, dict):
        return {}
    ident = {
        "message_id": data.get("id"),
        "message_type": data.get("type"),
        "organization": doc.get("organization"),
        "service": doc.get("service"),
    }
    return {k: v for k, v in ident.items() if isinstance(v, str)}


def _top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """Map each top-level key to the (start, end) span of its raw value. ``text`` is a non-empty
    JSON object that ``json.loads`` has already accepted, so no step here can meet bad syntax."""
    spans: dict[str, tuple[int, int]] = {}
    i = _skip(text, _skip(text, 0) + 1)  # past "{": at the first key's opening quote
    while True:
        key, i = _scanstring(text, i + 1)
        start = _skip(text, _skip(text, i) + 1)  # past ":"
        _, end = _DECODER.raw_decode(text, start)
        spans[key] = (start, end)
        i = _skip(text, end)  # at "," or the closing "}"
        if text[i] == "}":
            return spans
        i = _skip(text, i + 1)


def _skip(text: str, i: int) -> int:
    """The first index at or after ``i`` that is not JSON white space."""
    while i < len(text) and text[i] in _JSON_SPACE:
        i += 1
    return i


def _field(doc: dict[str, Any], key: str, kind: type[Any]) -> Any:
    if key not in doc:
        return None
    value = doc[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PoisonEntry(f"entry key {key!r} is not a {kind.__name__}")
    return value


def _body(text: str, message: Any) -> tuple[bytes, dict[str, Any]]:
    """The raw bytes of the top-level ``message`` value (decoded as ``message``) and its data."""
    if isinstance(message, str):
        # petisco variants that stored the body as a JSON string: republish that string.
        raw, value = message, _loads_body(message)
    else:
        raw, value = _raw_span(text, message), message
    if not isinstance(value, dict) or not isinstance(value.get("data"), dict):
        raise PoisonEntry("message has no 'data' object")
    return raw.encode(), value["data"]


def _raw_span(text: str, message: Any) -> str:
    # Fast path for the usual layout (ours and petisco's): the first '"message":' is the
    # top-level key. Only trusted if what is found there decodes to the very same value.
    at = text.find('"message":')
    if at > 0:
        start = _skip(text, at + len('"message":'))
        try:
            value, end = _DECODER.raw_decode(text, start)
        except ValueError:
            value = end = None
        if end is not None and value == message:
            return text[start:end]
    start, end = _top_level_spans(text)["message"]
    return text[start:end]


def _loads_body(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise PoisonEntry("message is a string that is not JSON") from None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A parked entry: the original bytes, untouched, and why it was parked."""

    original: bytes
    reason: str
    source_list: str
    dead_at: str
    run_id: str | None


def encode_dead_letter(
    original: bytes, *, reason: str, source_list: str, run_id: str | None
) -> bytes:
    """Wrap a parked entry; non-UTF-8 originals are kept as base64 so requeue restores them."""
    try:
        kept: dict[str, str] = {"entry": original.decode()}
    except UnicodeDecodeError:
        kept = {"entry_base64": base64.b64encode(original).decode()}
    doc = {
        "reason": reason,
        "source_list": source_list,
        "dead_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "run_id": run_id,
        **kept,
    }
    return json.dumps(doc).encode()


def decode_dead_letter(raw: bytes) -> DeadLetter:
    doc = json.loads(raw)
    if "entry_base64" in doc:
        original = base64.b64decode(doc["entry_base64"])
    else:
        original = str(doc["entry"]).encode()
    return DeadLetter(
        original=original,
        reason=str(doc.get("reason", "")),
        source_list=str(doc.get("source_list", "")),
        dead_at=str(doc.get("dead_at", "")),
        run_id=doc.get("run_id"),
    )


def unreadable_id(raw: bytes) -> str:
    """The audit's message id for an entry with none: the same entry always gets the same id,
    so its dead-lettered, requeued and purged rows can be linked."""
    return f"unreadable:{hashlib.sha256(raw).hexdigest()[:32]}"


def is_ours(raw: bytes) -> bool:
    """Written by fallbackbus (so already counted as fell back), not by petisco or by hand."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and "stored_at" in doc
