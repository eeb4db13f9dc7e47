"""The OpenAPI document against a live bot: Procfile's gunicorn and real neonize logged in to the
WhatsApp simulator. The chat actions' answers (which need a WhatsApp that answers them) are checked
against their schemas, and Schemathesis, given GET /api/openapi.json alone, finds nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests

from qrterminal import END_MARKER
from tests.support.harness import ROOT, run_shared_env
from tests.support.openapi_check import check_http, event_validator
from tests.support.qrdecode import printed_qr_texts
from tests.support.simulator import sim_overrides

KEY = "openapi-live-key-0123456789"
AUTH = {"X-Api-Key": KEY}
SIM_OPTIONS = {"phone_number": "14155550188"}  # for conftest's `sim`
CONTACT = "4915112345678"


def _paired_bot(sim, start_bot, tmp_path, **env):
    """A fresh bot whose printed QR code the simulated phone scans; connected when this returns."""
    qr_before = len(sim.qr_refs)
    bot = start_bot(**sim_overrides(sim), API_KEY=KEY, SESSION_DIR=str(tmp_path / "session"), SESSION_SAVE_DELAY="0.3",
                    **env)
    sim.wait_for_qr(timeout=30, after=qr_before)
    bot.wait_for_line(END_MARKER, timeout=30)
    jid = sim.scan_qr(printed_qr_texts(bot.output())[0])
    sim.wait_logged_in(jid, timeout=30)
    bot.wait_state("connected", timeout=30)
    return bot, jid


def test_the_chat_actions_answers_from_a_bot_on_the_simulator_fit_the_document(sim, start_bot, tmp_path):
    """Read marks, typing, reactions, edits, deletes, number checks and groups answered by the real bot
    (Procfile's gunicorn, real neonize) logged in to the WhatsApp simulator, each answer checked."""
    bot, jid = _paired_bot(sim, start_bot, tmp_path)

    def call(method: str, path: str, body=None) -> dict:
        response = requests.request(method, bot.url + path, json=body, headers=AUTH, timeout=30)
        check_http(method, path, response)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        return response.json()

    received = sim.deliver_text(jid, CONTACT, "is the shop open?", push_name="Ada")  # 1:1: no sender needed
    call("POST", "/api/read", {"chat": f"+{CONTACT}", "messageIds": [received]})
    call("POST", "/api/presence", {"to": f"+{CONTACT}", "state": "typing"})
    call("POST", "/api/react", {"chat": f"+{CONTACT}", "messageId": received, "emoji": "\U0001f44d"})
    own = call("POST", "/api/send", {"to": f"+{CONTACT}", "text": "yes, until 6"})
    call("POST", "/api/edit", {"chat": f"+{CONTACT}", "messageId": own["id"], "text": "yes, until 7"})
    call("POST", "/api/delete", {"chat": f"+{CONTACT}", "messageId": own["id"]})
    numbers = call("POST", "/api/check-numbers", {"numbers": [f"+{CONTACT}"]})["numbers"]
    assert numbers[0]["number"] == f"+{CONTACT}"
    assert isinstance(call("GET", "/api/groups")["groups"], list)


# -- Schemathesis against the live bot ------------------------------------------------------------------

SCHEMATHESIS_SEED = 20261203  # the same cases every run: CI must not turn red by chance


def _schemathesis(bot, tmp_path, examples: int, *selection: str) -> None:
    """One `schemathesis run` from GET /api/openapi.json alone (the key is all it is given): the
    document's examples, boundary values (coverage) and random cases, valid and invalid, one worker,
    every check but the two tests/schemathesis.toml explains."""
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
         "run", f"{bot.url}/api/openapi.json", "--header", f"X-Api-Key: {KEY}",
         "--phases", "examples,coverage,fuzzing", "--max-examples", str(examples),
         "--seed", str(SCHEMATHESIS_SEED), "--workers", "1", "--request-timeout", "30",
         "--generation-database", "none",  # it would start empty in this test's HOME every run: only writes
         "--no-color", "--output-truncate", "true", "--report", "junit", "--report-dir", str(tmp_path / "report"),
         *selection],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "LANG": "C.UTF-8", **run_shared_env()},
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0 and " passed" in output, output[-12000:]
    print(output[output.find("Test cases:"):].strip())  # how many cases ran (pytest -rP shows it)


def test_schemathesis_finds_nothing_against_the_live_bot(sim, receiver, start_bot, tmp_path):
    """Real gunicorn (Procfile) and real neonize logged in to the WhatsApp simulator, a webhook
    receiver. First with the bot connected (sends and chat actions reach the simulator, paced by
    SEND_RATE_LIMIT; /api/clear-session left out, it would end that), then every operation, clear-session
    included, so the rest also runs against a bot waiting for a scan. Every answer fits its schema, no
    request gets a 5xx, the bot logs no traceback, and every event it POSTs meanwhile fits its webhook."""
    bot, _ = _paired_bot(sim, start_bot, tmp_path, WEBHOOK_URL=receiver.url)
    _schemathesis(bot, tmp_path, 25, "--exclude-path", "/api/clear-session")
    assert bot.request("GET", "/api/health")[1]["state"] == "connected"
    _schemathesis(bot, tmp_path, 10)
    assert bot.proc.poll() is None, "the bot still runs"
    log = bot.output()
    assert "Traceback" not in log and "unhandled error" not in log, log[-5000:]
    posts = [json.loads(post.body) for post in receiver.posts]
    assert {p["event"] for p in posts} >= {"qr", "paired", "connected", "receipt", "logged_out"}
    for payload in posts:
        event_validator(payload["event"]).validate(payload)
