"""Issue 20 end to end on the PostgreSQL store: the conversation of test_continuity.py (pair, chat,
restart three times, each boot restoring what the database holds), with nothing lost to a restart:
the database keeps whatsmeow's whole state, so no message needs a retry."""

from __future__ import annotations

import pytest

from tests.support.continuity import SIM_PHONE, Conversation, PostgresStore, Run
from tests.support.simulator import running_receiver

SIM_OPTIONS = {"phone_number": SIM_PHONE}  # for conftest's `sim`


@pytest.fixture(scope="module")
def postgres_run(sim, pg_server, tmp_path_factory) -> Run:
    url = pg_server.create_database("continuity")
    with running_receiver() as receiver:
        store = PostgresStore(sim, tmp_path_factory.mktemp("postgres"), receiver, url)
        try:
            run = Conversation(sim, store, receiver, tag="2").play()
        finally:
            store.close()  # its bots first: see running_receiver
    print("\n" + run.table())
    return run


def test_postgres_keeps_everything_live_no_retry_after_any_restart(postgres_run):
    run = postgres_run
    assert all(d.arrived for d in run.deliveries), run.table()  # the old client too: nothing to retry
    assert all(d.rounds == 0 for d in run.deliveries), run.table()
    assert all(s.read for s in run.sends), run.sends
    assert run.prekey_conflicts == [] and run.peer_keys_spent_after_restarts == 0
