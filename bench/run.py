"""The benchmark command: ``python -m bench`` or ``bin/bench``.

It starts a private redis-server on a free loopback port and runs the
suites chosen with ``--suites`` (default: all of drain, enqueue and
latency), then prints the tables and how each target in
docs/benchmarks.md compares. ``--big`` adds the drain rate with
1,000,000 jobs queued against 10,000 (several minutes).

Peers: Ruby Sidekiq 6.4 from Debian's ruby-sidekiq package, and Dramatiq,
Huey and Celery from .bench-venv, which the command creates and fills from
PyPI when it is missing or out of date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import contenders, drain, enqueue, latency, report
from bench.drain import Contender, DrainSeries
from bench.latency import LatencyRun
from bench.peers import venv
from bench.server import BenchRedis
from pyqueue import __version__
from pyqueue.config import Settings

SUITES = ("drain", "enqueue", "latency")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])

    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per drain run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--threads", type=int, default=10, help="threads of pyqueue and Sidekiq")
    parser.add_argument(
        "--processes",
        type=int,
        default=contenders.cores(),
        help="processes of the multi-process pyqueue row (default: the cores available)",
    )
    parser.add_argument(
        "--suites",
        default=",".join(SUITES),
        help=f"comma-separated subset of {', '.join(SUITES)} (default: all)",
    )
    parser.add_argument(
        "--fetch",
        default=",".join(fetch_modes()),
        help="comma-separated pyqueue fetch strategies to measure (default: every one)",
    )

    parser.add_argument("--no-peers", action="store_true", help="skip Dramatiq, Huey and Celery")
    parser.add_argument("--no-ruby", action="store_true", help="skip Ruby Sidekiq")
    parser.add_argument(
        "--big", action="store_true", help="also drain 1,000,000 queued jobs against 10,000"
    )
    parser.add_argument(
        "--big-jobs", type=int, default=1_000_000, help="queued jobs of the big drain"
    )

    parser.add_argument("--enqueue-jobs", type=int, default=10_000, help="one-at-a-time pushes")
    parser.add_argument("--bulk-jobs", type=int, default=100_000, help="jobs per push_bulk")
    parser.add_argument("--latency-rate", type=float, default=200.0, help="jobs per second")
    parser.add_argument("--latency-jobs", type=int, default=2_000, help="jobs per latency run")

    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")

    args = parser.parse_args(argv)
    args.suites = [name for name in args.suites.split(",") if name]
    unknown = sorted(set(args.suites) - set(SUITES) - {"big"})
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    args.fetch = [mode for mode in args.fetch.split(",") if mode]
    return args


def fetch_modes() -> list[str]:
    """Return the fetch strategies this pyqueue accepts, the default first."""
    default = Settings().fetch
    return [default] + [mode for mode in ("basic", "reliable") if mode != default]


def echo(line: str) -> None:
    print(line, flush=True)


def pyqueue_rows(args: argparse.Namespace) -> list[Contender]:
    rows = [contenders.pyqueue_worker(args.threads, 1, mode) for mode in args.fetch]
    if args.processes > 1:
        rows += [
            contenders.pyqueue_worker(args.threads, args.processes, mode) for mode in args.fetch
        ]
    return rows


def run_drain(server: BenchRedis, args: argparse.Namespace) -> list[DrainSeries]:
    rows = pyqueue_rows(args)
    if not args.no_ruby:
        rows.append(contenders.sidekiq_worker(args.threads))
    if not args.no_peers:
        venv.ensure(echo)
        rows += contenders.peer_workers()
    echo(f"drain: {args.jobs:,} no-op jobs, {args.repeats} runs each")
    return drain.interleaved(server, rows, args.jobs, args.repeats, echo)


def run_latency(server: BenchRedis, args: argparse.Namespace) -> list[LatencyRun]:
    rows = [contenders.pyqueue_worker(args.threads, 1, mode) for mode in args.fetch]
    if not args.no_ruby:
        rows.append(contenders.sidekiq_worker(args.threads))
    echo(
        f"latency: {args.latency_jobs:,} jobs at {args.latency_rate:g} jobs/s on an idle worker, "
        f"{args.repeats} runs each"
    )
    return latency.interleaved(
        server, rows, args.latency_rate, args.latency_jobs, args.repeats, echo
    )


def run_big(server: BenchRedis, args: argparse.Namespace) -> list[DrainSeries]:
    """Drain 10,000 queued jobs (median of the repeats), then ``--big-jobs`` (one run)."""
    echo(f"big: 10,000 queued against {args.big_jobs:,} queued, one process")
    results: list[DrainSeries] = []
    for mode in args.fetch:
        row = contenders.pyqueue_worker(args.threads, 1, mode)
        small = drain.series(server, row, 10_000, args.repeats, echo)
        small.name += ", 10,000 queued"
        large = drain.series(server, row, args.big_jobs, 1, echo)
        large.name += f", {args.big_jobs:,} queued"
        results += [small, large]
    return results


def machine() -> dict[str, str]:
    """Return what the figures depend on: CPU, cores, OS and versions."""
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    ruby = shutil.which("ruby")
    return {
        "cpu": _cpu_model(),
        "cores": str(contenders.cores()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "pyqueue": __version__,
        "redis": next((w.split("=")[1] for w in redis_version if w.startswith("v=")), "?"),
        "ruby": subprocess.run([ruby, "-v"], capture_output=True, text=True).stdout.strip()
        if ruby
        else "missing",
    }


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages: other work on the machine skews figures."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "?"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M")}
    results["machine"]["load at start"] = load_average()
    echo(" ".join(f"{k}={v}" for k, v in results["machine"].items()))
    with BenchRedis() as server:
        if "drain" in args.suites:
            results["drain"] = run_drain(server, args)
        if "enqueue" in args.suites:
            echo("enqueue:")
            results["enqueue"] = enqueue.measure(
                server, args.enqueue_jobs, args.bulk_jobs, args.repeats, echo
            )
        if "latency" in args.suites:
            results["latency"] = run_latency(server, args)
        if args.big or "big" in args.suites:
            results["big"] = run_big(server, args)
    results["machine"]["load at end"] = load_average()
    if not args.no_peers and "drain" in args.suites:
        results["machine"].update(
            {name: venv.version(name) for name in ("dramatiq", "huey", "celery")}
        )
    print_results(results, args.markdown)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2, default=_as_dict)
    return 0


def _as_dict(value: Any) -> Any:
    return asdict(value)


def print_results(results: dict[str, Any], markdown: bool) -> None:
    from bench.targets import target_rows

    echo("")
    if "drain" in results and results["drain"]:
        echo(report.drain_table(results["drain"], results["drain"][0], markdown) + "\n")
    if "enqueue" in results:
        echo(report.enqueue_table(results["enqueue"], markdown) + "\n")
    if "latency" in results:
        echo(report.latency_table(results["latency"], markdown) + "\n")
    if "big" in results:
        echo(report.drain_table(results["big"], results["big"][0], markdown) + "\n")
    rows = target_rows(results)
    if rows:
        echo(report.table(["target", "measured", "goal", "status"], rows, markdown) + "\n")
    for key, value in results["machine"].items():
        echo(f"{key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
