"""Run the benchmark suite: `python -m tests.bench [--only NAME ...] [--backend sqlite|postgres] [--scale F]`.

Prints a table with the machine and versions, and writes the same results as JSON.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.bench import audit, console, log, scale, serving, standby, writes
from tests.bench.harness import Bench, machine, print_table, write_json

BENCHMARKS = {
    "put": writes.put_throughput,
    "put-after-import": writes.put_after_bulk_import,
    "post": writes.post_throughput,
    "serving": serving.serving_defaults,
    "rebuild": audit.rebuild_and_feed,
    "run-as-of": audit.run_as_of,
    "history": audit.long_history,
    "feed-under-writers": audit.feed_under_writers,
    "scale": scale.put_at_scale,
    "log": log.verifiable_log,
    "batch": writes.batch_import,
    "console": console.console_pages,
    "standby": standby.standby_reads,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append", help="default: both")
    parser.add_argument("--scale", type=float, default=1.0, help="data sizes times this (0.1 for a quick run)")
    parser.add_argument("--json", type=Path, default=Path(".bench") / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="goldtrail-bench-") as scratch:
        bench = Bench(Path(scratch), args.backend or ["postgres", "sqlite"], args.scale)
        for name in args.only or BENCHMARKS:
            for backend in bench.backends:
                print(f"{name} on {backend} ...", flush=True)
                BENCHMARKS[name](bench, backend)
    about = machine()
    print_table(bench.results, about)
    write_json(args.json, bench.results, about, {"scale": args.scale, "backends": bench.backends})
    print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
