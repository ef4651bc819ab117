"""Celery settings of the replay service, read from the ``FALLBACKBUS_*`` environment.

``tasks.app`` loads this module with ``app.config_from_object("celeryconfig")``; it must be
importable from the working directory or ``PYTHONPATH`` (the Docker image puts it on
``PYTHONPATH``). Every value derives from :class:`fallbackbus.Settings`, so the worker, beat and
the library agree on the interval, the lists and the key prefix.
"""

from typing import Any

from fallbackbus.redis.keys import COMMANDS, DOMAIN_EVENTS
from fallbackbus.settings import Settings

# Celery reads every module attribute as a setting and prints them in `celery report`, except
# those starting with "_": the settings hold credentials, so they stay private.
_settings = Settings.from_env()

# -- broker -----------------------------------------------------------------------------------

# Redis by default, not RabbitMQ: RabbitMQ being down is exactly when the replay ticks must keep
# coming, so Celery's own messages must not depend on it.
broker_url = _settings.effective_celery_broker_url
# Keep retrying the broker at start-up instead of exiting: under compose or systemd the worker
# may start before Redis answers.
broker_connection_retry_on_startup = True

# No result backend: beat ignores results, the worker logs each run's report, and the audit
# database's runs table is the durable record of every run.
task_ignore_result = True

# -- queue --------------------------------------------------------------------------------------

# Prefixed like every other Redis key of this deployment, so deployments (or test runs) sharing
# one Redis never consume each other's ticks.
task_default_queue = f"{_settings.redis_key_prefix}fallbackbus.replay"

# JSON only: the arguments are a list name and a number, and a worker that accepts pickle runs
# whatever code a broker message carries.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

timezone = "UTC"
enable_utc = True

# -- execution ----------------------------------------------------------------------------------

# Ack a tick only once its run has finished, and requeue it if the worker process dies mid-run
# (OOM kill, SIGKILL): the replay engine is at-least-once, so running a tick again is harmless;
# the lock stops a duplicate from overlapping a live run and ``expires`` below drops it once it is
# stale, so a tick that keeps killing its worker cannot loop forever.
task_acks_late = True
task_reject_on_worker_lost = True

# One tick reserved per worker process: a process busy draining a long backlog must not sit on
# ticks that an idle process could run now.
worker_prefetch_multiplier = 1

# A run drains at most FALLBACKBUS_REPLAY_MAX_ENTRIES, and every batch re-arms a lease of
# FALLBACKBUS_REPLAY_LEASE_SECONDS; a run still going after a whole lease is stuck (a socket the
# library's timeouts missed). The soft limit raises inside the run, so its ``finally`` blocks
# release the lock and close the connections; the hard limit kills the process if even that
# hangs. Either way the claimed entries return to the list when their lease expires.
task_time_limit = _settings.replay_lease_seconds
task_soft_time_limit = _settings.replay_lease_seconds * 0.9

# With late acks on the Redis broker, a message not acked within the visibility timeout is
# delivered again. It must outlast the longest run the hard limit allows, or a run still in
# progress would be started a second time.
broker_transport_options = {"visibility_timeout": task_time_limit * 2}

# -- schedule -----------------------------------------------------------------------------------

_REPLAY_TASK = "fallbackbus.replay.list"
"""The generic task: replays the list named in its first argument."""

_LIST_TASKS = {
    DOMAIN_EVENTS: "fallbackbus.replay.domain_events",
    COMMANDS: "fallbackbus.replay.commands",
}
"""Lists with a task of their own, so logs and monitoring name the list without arguments."""


def _beat_entry(list_name: str, interval: float) -> dict[str, Any]:
    """One replay tick for ``list_name`` every ``interval`` seconds."""
    task = _LIST_TASKS.get(list_name)
    return {
        "task": task or _REPLAY_TASK,
        "schedule": interval,
        "args": () if task else (list_name,),
        # A tick not started within one interval is stale: the next one is already on its way,
        # so a backlog of ticks (worker down for an hour) is dropped instead of run in a burst.
        "options": {"expires": interval},
    }


beat_schedule = {
    f"replay {name}": _beat_entry(name, _settings.replay_interval)
    for name in _settings.replay_lists
}
# Write the schedule file after every tick: its modification time is what the compose health
# check reads to tell that beat is ticking.
beat_sync_every = 1
