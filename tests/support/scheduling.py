"""How the tests are shared out between pytest-xdist's workers (conftest's pytest_xdist_make_scheduler).

xdist's `--dist loadfile` keeps each file on one worker, which a file of module-scoped fixtures needs
(one simulator whose linked devices outlive a test, a first deploy built once). But then a file of
twenty independent gunicorn tests also runs on one worker while the others idle, and a file whose
one test takes a minute starts last (xdist orders files by how many tests they hold). xdist's own way
to split files, `--dist loadgroup` with `xdist_group` marks, does nothing with pytest 9: it renames
`item._nodeid`, which pytest 9 no longer reads (its node ids live in `_id`), so every mark is lost.

So this scheduler is xdist's load-by-scope with two changes:
- a file named in SPREAD hands out each of its tests on its own (conftest refuses a SPREAD file that
  has a module-scoped fixture, at collection, so a wrong entry fails loudly instead of running a
  fixture twice);
- the work named in FIRST goes out first, in that order (the longest files and tests, so that none
  of them starts when the others are nearly done); the rest follows in xdist's order.
The lists only decide where and when a test runs, never whether it does.
"""

from __future__ import annotations

from collections import OrderedDict

from xdist.scheduler import LoadScopeScheduling

# Files of independent tests (function-scoped fixtures only), each test a unit of its own.
SPREAD = frozenset({
    "tests/test_api.py",
    "tests/test_bench.py",
    "tests/test_cycle.py",
    "tests/test_gunicorn.py",
    "tests/test_hostile_requests.py",
    "tests/test_media_fetch.py",
    "tests/test_openapi.py",
    "tests/test_outbox.py",
    "tests/test_pgsession.py",
    "tests/test_real_neonize.py",
    "tests/test_saving.py",
    "tests/test_schema_cache.py",
    "tests/test_snapshot.py",
    "tests/test_stop_save.py",
    "tests/test_stores.py",
})

# Node id prefixes of the longest work (tens of seconds each, measured with --durations), longest first.
FIRST = (
    "tests/test_openapi_live.py",
    "tests/test_continuity.py",
    "tests/test_cycle.py::test_ten_restarts",
    "tests/test_qr_browser.py",
    "tests/test_sim_events.py",
    "tests/test_sim_bot.py",
    "tests/test_wasim.py",
    "tests/test_sim_actions.py",
    "tests/test_offline.py",
    "tests/test_sim_media.py",
    "tests/test_pg_bot.py",
    "tests/test_snapshot_hostile.py",
    "tests/test_continuity_postgres.py",
    "tests/test_hostile_requests.py::test_twenty_clients_dripping_headers",
    "tests/test_liveness.py",
    "tests/test_events.py",
    "tests/test_status_truth.py",
    "tests/test_restart_events.py",
)


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class SpreadScheduling(LoadScopeScheduling):
    """Whole files, except SPREAD files' tests one by one; FIRST's work handed out before the rest."""

    _ordered = False

    def _split_scope(self, nodeid: str) -> str:
        path = file_of(nodeid)
        return nodeid if path in SPREAD else path

    def _assign_work_unit(self, node) -> None:
        if not self._ordered:  # the queue is complete by the first assignment (LoadScopeScheduling.schedule)
            self._ordered = True
            self.workqueue = OrderedDict(sorted(self.workqueue.items(), key=lambda item: _rank(item[0])))
        super()._assign_work_unit(node)


def _rank(scope: str) -> int:
    for rank, prefix in enumerate(FIRST):
        if scope.startswith(prefix):
            return rank
    return len(FIRST)
