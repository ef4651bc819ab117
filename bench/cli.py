"""``python -m bench``: run the benchmarks, print one table, save it as JSON.

Exit status 0 when every target is met, 1 otherwise (a figure missed its target or failed to run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import kombu
from sqlalchemy import create_engine, text

from bench.env import Environment, Services
from bench.figures import BENCHMARKS, Context
from bench.report import Row, table
from bench.sizes import FULL, QUICK, Sizes

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent
PACKAGES = ("fallbackbus", "kombu", "amqp", "redis", "hiredis", "SQLAlchemy", "psycopg", "pydantic")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(sizes: Sizes, only: list[str] | None = None, services: Services | None = None) -> list[Row]:
    """Run the selected benchmarks (all by default) and return their rows, in table order.

    A benchmark that raises yields one row without a value, so the table says what failed.
    """
    env = Environment(services or Services.from_env())
    ctx = Context(env, sizes, _progress)
    rows: list[Row] = []
    try:
        for benchmark in BENCHMARKS:
            if only and benchmark.name not in only:
                continue
            _progress(f"{benchmark.name}: {benchmark.description}")
            started = time.monotonic()
            try:
                rows += benchmark.run(ctx)
            except Exception as exc:
                traceback.print_exc()
                rows.append(
                    Row(
                        key=benchmark.name,
                        figure=benchmark.name,
                        unit="",
                        value=None,
                        baseline=None,
                        baseline_name="none",
                        target=benchmark.description,
                        passed=False,
                        notes=[f"failed: {exc!r}"],
                    )
                )
            _progress(f"{benchmark.name}: done in {time.monotonic() - started:.1f} s")
    finally:
        env.close()
    return rows


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _servers(services: Services) -> dict[str, str]:
    env = Environment(services)
    found: dict[str, str] = {}
    try:
        found["redis"] = str(env.redis.info("server").get("redis_version", ""))
        with kombu.Connection(services.rabbitmq_url) as connection:
            connection.connect()
            version = connection.connection.server_properties.get("version", "")
            found["rabbitmq"] = version.decode() if isinstance(version, bytes) else str(version)
        engine = create_engine(services.postgres_url)
        try:
            with engine.connect() as connection:
                found["postgresql"] = str(connection.execute(text("SHOW server_version")).scalar())
        finally:
            engine.dispose()
    except Exception as exc:  # metadata only: never fail a run for it
        found["error"] = repr(exc)
    finally:
        env.close()
    return found


def _environment(services: Services) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "fallbackbus")),
        "packages": versions,
        "servers": _servers(services),
    }


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(b.name for b in BENCHMARKS)
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="fallbackbus against the raw clients, side by side (ratios, same run).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds, not minutes")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable, or comma-separated): {names}",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the results (default: bench/results/<UTC timestamp>.json)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = [name.strip() for item in args.only or [] for name in item.split(",") if name.strip()]
    unknown = set(only) - {b.name for b in BENCHMARKS}
    if unknown:
        _parser().error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    services = Services.from_env()
    started, load_before = datetime.now(UTC), os.getloadavg()
    rows = run(sizes, only or None, services)
    finished, load_after = datetime.now(UTC), os.getloadavg()
    mode = "quick" if args.quick else "full"
    print(
        f"\nfallbackbus bench ({mode}), {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"({(finished - started).total_seconds():.0f} s)\n"
    )
    print(table(rows))
    path = args.json or RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "mode": mode,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "load_average": {"before": load_before, "after": load_after},
        "sizes": asdict(sizes),
        "environment": _environment(services),
        "rows": [row.as_dict() for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults written to {path}")
    return 0 if all(row.passed is not False for row in rows) else 1
