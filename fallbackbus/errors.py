"""The one exception root of fallbackbus.

Callers catch :class:`FallbackBusError` (or one of its children) and never a kombu, redis or
SQLAlchemy error: every driver error is translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class FallbackBusError(Exception):
    """Root of every error fallbackbus raises."""


class ConfigurationError(FallbackBusError):
    """A setting is missing or malformed."""


class InvalidMessage(FallbackBusError):
    """The input is not something that can be published; nothing was sent."""


class MessageTooLarge(InvalidMessage):
    """A serialized message is over the configured size limit; nothing was sent."""


class BrokerUnavailable(FallbackBusError):
    """RabbitMQ could not be reached or did not answer within the bounded wait."""


class FallbackUnavailable(FallbackBusError):
    """The fallback store (Redis) could not take the messages."""


class BusCannotPublish(FallbackBusError):
    """Neither RabbitMQ nor the fallback confirmed the messages: treat them as unsent.

    A message may still have arrived (its confirm or Redis's reply was lost in a cut), so resending
    it can make a duplicate, never a loss; consumers deduplicate by message id.

    ``causes`` holds one line per layer that failed (broker first, then each fallback), and
    ``message_ids`` the ids of the messages the caller must still treat as unsent.
    """

    def __init__(self, causes: list[str], message_ids: list[str]) -> None:
        self.causes = list(causes)
        self.message_ids = list(message_ids)
        super().__init__(
            f"{len(message_ids)} message(s) could not be published nor stored: " + "; ".join(causes)
        )


class AuditUnavailable(FallbackBusError):
    """The audit database could not be reached; no replay starts without it."""


class ReplayError(FallbackBusError):
    """A replay run could not proceed."""
