"""The Procfile's command under real gunicorn: one worker, a health check at once, a clean SIGTERM."""

import subprocess

from tests.support.harness import BotProcess, base_env, wait_for

HOOK_LINE = "WhatsApp connection starting in worker pid"


def test_one_worker_even_when_web_concurrency_asks_for_four(start_bot):
    bot = start_bot(WEB_CONCURRENCY="4")
    body = bot.wait_healthy()
    assert body["ok"] is True
    # post_worker_init runs before the worker serves, so after the first 200 the hook has run.
    assert bot.count(HOOK_LINE) == 1, bot.output()
    tree = bot.process_tree()
    assert len(tree) == 2, f"expected master + 1 worker, got {tree}\n{bot.output()}"
    assert "WEB_CONCURRENCY=4 is ignored" in bot.output()


def test_gunicorn_cmd_args_cannot_add_workers(start_bot):
    bot = start_bot(GUNICORN_CMD_ARGS="--workers 3 --access-logfile -")
    bot.wait_healthy()
    assert len(bot.process_tree()) == 2, bot.output()
    assert bot.count(HOOK_LINE) == 1


def test_health_errors_are_json(start_bot):
    bot = start_bot()
    bot.wait_healthy()
    status, body = bot.request("GET", "/no/such/page")
    assert status == 404 and body["error"] == "not_found" and body["message"]
    status, body = bot.request("DELETE", "/api/health")
    assert status == 405 and body["error"] == "method_not_allowed"


def test_sigterm_stops_the_whole_process_tree(start_bot):
    bot = start_bot()
    bot.wait_healthy()
    bot.terminate()
    assert bot.wait(timeout=10) == 0, bot.output()
    wait_for(lambda: not bot.alive_pids_in_group(), 5, "every process of the group to exit")
    assert "connection stopped" in bot.output()


def test_bad_configuration_stops_the_start_with_one_clear_line(tmp_path):
    bot = BotProcess(base_env(PORT="eighty", SESSION_DIR=str(tmp_path / "s")))
    bot.start()
    try:
        code = bot.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"bot kept running with PORT=eighty:\n{bot.output()}")
    finally:
        bot.stop()
    assert code != 0
    assert "configuration error: PORT must be a whole number" in bot.output()
    assert "Traceback" not in bot.output()


def test_a_symlinked_api_key_file_stops_the_start_with_one_line_and_is_not_followed(tmp_path):
    target = tmp_path / "someone-elses-key"
    target.write_text("key-someone-else-knows-0123456789\n")
    (tmp_path / "s.api-key").symlink_to(target)
    bot = BotProcess(base_env(SESSION_DIR=str(tmp_path / "s")))
    bot.start()
    try:
        code = bot.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"bot kept running with a symlinked key file:\n{bot.output()}")
    finally:
        bot.stop()
    assert code != 0
    lines = [line for line in bot.output().splitlines() if "configuration error" in line]
    assert len(lines) == 1 and "symbolic link" in lines[0], bot.output()
    assert "Traceback" not in bot.output()
    assert (tmp_path / "s.api-key").is_symlink() and target.read_text().startswith("key-someone-else")
