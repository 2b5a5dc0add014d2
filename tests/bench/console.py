"""The auditor console on big data: how long its pages take to render on the server, for an account with 10,000
runs, a run of 10,000 labels and a label of 10,000 events (DESIGN.md §3.2 asks for under a second each, by
paging rather than by hiding data). Timed from a client on the same host: the page's whole request."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx

from events.types import format_time
from tests.bench.generate import EPOCH, Clock, run_rows, write_runs
from tests.bench.harness import Bench, timed
from tests.helpers import token

ACCOUNT = "console-bench"
# Each small run: five labels at versions 1, 2, 3, 2 and 1, the fourth ending deleted (9 events).
SMALL_VERSIONS, SMALL_DELETED = [1, 2, 3, 2, 1], [False, False, False, True, False]
START = EPOCH - timedelta(days=2)


class Data:
    """What the benchmark writes: many small runs, one big run, one long label; and where to look at them."""

    def __init__(self, bench: Bench) -> None:
        self.runs, self.labels, self.versions = bench.n(10_000), bench.n(10_000), bench.n(10_000)
        self.big_run, self.long_run = str(uuid.uuid4()), str(uuid.uuid4())
        self.clock = Clock(START, 1000)  # events 1 ms apart
        self.tick = 0
        self.middle = ""  # halfway through the big run's last round of updates

    def _run(self, run_id: str, versions: list[int], deleted: list[bool]) -> tuple[list[tuple], list[list]]:
        rows = run_rows(ACCOUNT, run_id, versions, deleted, self.tick, self.clock)
        self.tick += sum(versions)
        return rows

    def rows(self) -> Iterator[tuple[list[tuple], list[list]]]:
        for _ in range(self.runs - 2):
            yield self._run(str(uuid.uuid4()), SMALL_VERSIONS, SMALL_DELETED)
        first = self.tick
        yield self._run(self.big_run, [3] * self.labels, [False] * self.labels)
        self.middle = self.clock(first + 2 * self.labels + self.labels // 2)
        events = self._run(self.long_run, [self.versions], [False])
        self.long_label = events[1][0][1]
        yield events


def _get(client: httpx.Client, path: str, **params: str) -> httpx.Response:
    response = client.get(path, params=params)
    response.raise_for_status()
    return response


def console_pages(bench: Bench, backend: str) -> None:
    data = Data(bench)
    with bench.database(backend) as url:
        written = write_runs(url, data.rows())
        if backend == "postgres":
            bench.analyze(url)
        bench.record("console", backend, "generated", written, "events", f"{data.runs:,} runs")
        cookie = {"Cookie": f"goldtrail_console={token(ACCOUNT, 'auditor', ttl=36000, scope='audit:read')}"}
        # No integrator: integrating the bulk-written log would share the cores with the pages being timed.
        with (
            bench.servers(url, GOLDTRAIL_INTEGRATOR="off") as (base,),
            httpx.Client(base_url=base, headers=cookie, timeout=120) as client,
        ):
            runs_page = _get(client, "/console/runs").text
            assert runs_page.count('<a class="id" href="/console/run/') == 50
            (following,) = re.findall(r'<a href="([^"]+)" rel="next">', runs_page)
            long_label = f"/console/run/{data.long_run}/label/{data.long_label}"
            big = f"/console/run/{data.big_run}"
            pages = [
                (f"runs page, {data.runs:,} runs", "/console/runs", {}),
                ("runs page 2", following.replace("&amp;", "&"), {}),
                ("runs search by output resource name", "/console/runs", {"q": "output-4"}),
                ("runs search by run id", "/console/runs", {"q": data.big_run[:4]}),
                (f"run of {data.labels:,} labels, now", big, {}),
                (f"run of {data.labels:,} labels, as of a time", big, {"as_of": data.middle}),
                (
                    f"run of {data.labels:,} labels, changes between two times",
                    f"{big}/changes",
                    {"from": format_time(START), "to": data.middle},
                ),
                (f"label of {data.versions:,} events, newest", long_label, {}),
                (f"label of {data.versions:,} events, oldest", long_label, {"newest": "100"}),
                (
                    f"label of {data.versions:,} events, state at the last version",
                    long_label,
                    {"version": str(data.versions)},
                ),
                ("activity, unfiltered, with its chart", "/console/activity", {}),
                ("activity of one actor", "/console/activity", {"actor": "carol"}),
                ("integrity", "/console/integrity", {}),
            ]
            for name, path, params in pages:
                _get(client, path, **params)  # once to warm up
                median, best = timed(lambda path=path, params=params: _get(client, path, **params))
                bench.record("console", backend, name, median * 1000, "ms", f"best {best * 1000:.0f} ms")
