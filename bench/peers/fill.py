"""Fill a peer's queue: ``python -m bench.peers.fill dramatiq|huey|celery COUNT``.

Runs inside .bench-venv, with REDIS_URL set. Pushes the start marker,
COUNT no-op jobs and the end marker through the peer's own client.
"""

from __future__ import annotations

import importlib
import sys

START_KEY = "bench:start"
DONE_KEY = "bench:done"


def main() -> None:
    framework, count = sys.argv[1], int(sys.argv[2])
    module = importlib.import_module(f"bench.peers.{framework}_jobs")
    module.enqueue(count, START_KEY, DONE_KEY)


if __name__ == "__main__":
    main()
