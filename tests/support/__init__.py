"""Helpers shared by the integration and fault-injection tests: the shared services' URLs and a
test's own names in them (``services``), private PostgreSQL schemas (``postgres``), private and
hung servers (``servers``), ending processes (``processes``), the RabbitMQ queue counter
(``consumer``), the ledger that proves no message was lost (``accounting``) and replay hooks
(``replay``). The fault proxy ships with the library: ``fallbackbus.testing.faultproxy``."""
