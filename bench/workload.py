"""The message every figure publishes, built the library's way and the raw clients' way.

Both ways do the work an application does per message (a fresh id, the petisco JSON body), so the
baselines carry no more and no less than fallbackbus does before anything reaches the wire.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from fallbackbus import DomainEvent
from fallbackbus.messages import KIND_DOMAIN_EVENT, TIME_FORMAT, routing_key

MESSAGE_TYPE = "user.created"
CONTENT_TYPE = "application/json"


class UserCreated(DomainEvent):
    user_id: str
    name: str
    email: str


def new_event(number: int = 0) -> UserCreated:
    return UserCreated(user_id=f"user-{number}", name="Ada Lovelace", email="ada@example.com")


def event_routing_key(organization: str, service: str) -> str:
    return routing_key(organization, service, 1, KIND_DOMAIN_EVENT, MESSAGE_TYPE)


def raw_body(message_id: str, number: int = 0) -> dict[str, Any]:
    """The petisco body of :func:`new_event`, written by hand as a raw-client user would."""
    return {
        "data": {
            "id": message_id,
            "type": MESSAGE_TYPE,
            "type_message": KIND_DOMAIN_EVENT,
            "version": 1,
            "occurred_on": datetime.now(UTC).strftime(TIME_FORMAT),
            "attributes": {
                "user_id": f"user-{number}",
                "name": "Ada Lovelace",
                "email": "ada@example.com",
            },
            "meta": {},
        }
    }


def raw_message(number: int = 0) -> tuple[str, bytes]:
    """A fresh message id and its JSON body, for the RabbitMQ baselines."""
    message_id = str(uuid.uuid4())
    return message_id, json.dumps(raw_body(message_id, number)).encode()


def raw_entry(organization: str, service: str, number: int = 0) -> bytes:
    """A fresh petisco fallback entry, for the Redis baseline."""
    body = raw_body(str(uuid.uuid4()), number)
    return json.dumps({"organization": organization, "service": service, "message": body}).encode()


def raw_properties(message_id: str) -> dict[str, Any]:
    """The AMQP properties fallbackbus sets, so both sides send the same frames."""
    return {
        "delivery_mode": 2,
        "content_type": CONTENT_TYPE,
        "content_encoding": "utf-8",
        "message_id": message_id,
        "type": MESSAGE_TYPE,
        "timestamp": int(datetime.now(UTC).timestamp()),
    }
