"""The `eventsourcing` library's append rate on PostgreSQL: the reference goldtrail's PUT is held to.

In-process, no HTTP, no read model: THREADS threads share one Application, each with an aggregate of
its own, and each turn of a loop triggers one event and saves it (one transaction per event, which
takes the library's table lock that keeps insert order equal to commit order). Prints the events
saved per second as JSON.

Run as `python -m tests.bench.eventsourcing_reference SECONDS THREADS` with GOLDTRAIL_DATABASE_URL set
to an empty PostgreSQL database; the PUT benchmark starts it (needs the `bench` extra).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import sqlalchemy as sa
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Counter(Aggregate):
    def __init__(self) -> None:
        self.count = 0

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


def settings(database_url: str, threads: int) -> dict[str, str]:
    """The library's own environment settings for its PostgreSQL persistence module."""
    url = sa.make_url(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.database,
        "POSTGRES_HOST": url.host or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",  # required, even when the server trusts local users
        "POSTGRES_POOL_SIZE": str(threads),  # a connection per thread: none waits for the pool
        "CREATE_TABLE": "y",
    }


def measure(database_url: str, seconds: float, threads: int) -> dict[str, float]:
    app = Application(env=settings(database_url, threads))
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def writer(n: int) -> None:
        counter = Counter()
        app.save(counter)  # the creation is not counted: the loop measures appends to an existing aggregate
        start.wait()
        while not stop.is_set():
            counter.increment()
            app.save(counter)
            counts[n] += 1

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    saved = sum(counts)
    # every save must have landed: the notification ids count the creations and the appends
    stored = app.recorder.max_notification_id()
    if stored != saved + threads:
        raise RuntimeError(f"saved {saved + threads} events but the table holds {stored}")
    app.close()
    return {"events": saved, "seconds": elapsed, "rate": saved / elapsed, "threads": threads}


if __name__ == "__main__":
    print(json.dumps(measure(os.environ["GOLDTRAIL_DATABASE_URL"], float(sys.argv[1]), int(sys.argv[2]))))
