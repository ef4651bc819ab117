"""The fallbackbus demo: a publisher through a RabbitMQ outage, replayed by Celery beat."""
