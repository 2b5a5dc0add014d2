"""The serving defaults, chosen by measurement: goldtrail's PUT on spread labels with 1, 2 and 4 worker
processes, and with 5, 10 and 20 pooled connections per worker, interleaved round by round."""

from __future__ import annotations

from tests.bench.harness import Bench
from tests.bench.writes import put_script, record_wrk, run_wrk

WORKERS = (1, 2, 4)
POOL_SIZES = (5, 10, 20)
DEFAULT_POOL = 10


def serving_defaults(bench: Bench, backend: str, rounds: int = 3) -> None:
    settings = [(workers, DEFAULT_POOL) for workers in WORKERS]
    settings += [(2, pool) for pool in POOL_SIZES if pool != DEFAULT_POOL]
    labels = bench.n(100_000)
    with bench.database(backend) as url:
        script = put_script(bench, url, labels, "serving")
        figures: dict[tuple[int, int], list[dict[str, float]]] = {setting: [] for setting in settings}
        for _ in range(rounds):
            for workers, pool in settings:
                with bench.servers(url, workers=workers, GOLDTRAIL_DB_POOL_SIZE=str(pool)) as (base,):
                    figures[workers, pool].append(run_wrk(base, script))
        for (workers, pool), rounds_figures in figures.items():
            name = f"serving: {workers} workers, pool {pool}"
            record_wrk(bench, name, backend, rounds_figures, workers, f"PUT spread ({labels:,} labels)")
