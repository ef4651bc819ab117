"""A replay worker process for the crash and concurrency scenarios.

``python -m tests.faults.replay_worker --list domain.events --prefix ... --audit-url ...`` builds a
``Replayer`` from settings, exactly as a Celery task or the CLI would, and calls ``run`` again and
again until the list is drained: the source is empty and no processing list or lease is left
(a lease left by a killed worker is recovered by a later run once it expires). Each run's report
is printed as one JSON line. With ``--go-key`` it first waits for that Redis key to exist, so that
several workers start draining at the same instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from fallbackbus.redis import ListKeys
from fallbackbus.replay import Replayer
from fallbackbus.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--list", default="domain.events")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--audit-url", required=True)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--lease-seconds", type=float, default=300.0)
    parser.add_argument("--go-key")
    args = parser.parse_args(argv)

    settings = Settings.from_env(
        {},
        redis_url=args.redis_url,
        rabbitmq_url=args.amqp_url,
        audit_db_url=args.audit_url,
        redis_key_prefix=args.prefix,
        replay_batch_size=args.batch_size,
        replay_lease_seconds=args.lease_seconds,
    )
    replayer = Replayer.from_settings(settings)
    keys = ListKeys(args.list, args.prefix)
    client = replayer.redis
    if args.go_key:
        while not client.exists(args.go_key):
            time.sleep(0.005)
    try:
        while True:
            report = replayer.run(args.list)
            print(json.dumps(report.as_dict()), flush=True)
            drained = (
                client.llen(keys.source) == 0
                and client.zcard(keys.leases) == 0
                and next(client.scan_iter(match=keys.processing_pattern), None) is None
            )
            if drained:
                return 0
            if report.republished + report.dead_lettered + report.returned == 0:
                time.sleep(0.1)  # waiting for another run to finish or a dead run's lease
    finally:
        replayer.close()


if __name__ == "__main__":
    sys.exit(main())
