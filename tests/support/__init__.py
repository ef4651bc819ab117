"""Helpers shared by the integration and fault-injection tests: fault proxy, private
servers, RabbitMQ queue counter and a ledger that proves no message was lost."""
