"""The replay service's Celery side: ``celery -A tasks worker`` and ``celery -A tasks beat``.

Thin by design: the app (:mod:`tasks.app`) and tasks (:mod:`tasks.replay`) that call
:func:`fallbackbus.replay.replay_list`; all logic lives in ``fallbackbus``.
"""

from tasks import replay
from tasks.app import app

__all__ = ["app", "replay"]
