import os
import stat
import threading
from pathlib import Path

import pytest

from config import ConfigError, load_config, with_local_api_key


def test_empty_environment_gives_laptop_defaults():
    cfg = load_config({})
    assert cfg.port == 8000
    assert cfg.session_dir == Path("session")
    assert cfg.session_store == "file"
    assert cfg.api_key is None
    assert cfg.config_vars_limit == 65536
    assert cfg.session_save_delay == 5.0
    assert cfg.heroku_api_url == "https://api.heroku.com"
    assert cfg.snapshot_file.name == "session.snapshot"
    assert cfg.send_rate_limit == 30 and cfg.warnings() == []  # paced by default
    assert cfg.unreachable_grace == 60.0


def test_send_rate_limit_zero_turns_pacing_off_with_a_warning():
    cfg = load_config({"SEND_RATE_LIMIT": "0"})
    assert cfg.send_rate_limit == 0
    assert any("SEND_RATE_LIMIT=0" in w and "bans" in w for w in cfg.warnings())


@pytest.mark.parametrize(
    "env, names",
    [
        ({"PORT": "eighty"}, ["PORT", "whole number"]),
        ({"PORT": "70000"}, ["PORT", "between"]),
        ({"HEROKU_API_KEY": "tok-123456"}, ["HEROKU_API_KEY", "HEROKU_APP_NAME"]),
        ({"API_KEY": "clé-secrète-0123456789"}, ["API_KEY", "non-ASCII"]),
        ({"API_KEY": "key-with-\x01-control-char"}, ["API_KEY"]),
        ({"WEBHOOK_URL": "not a url"}, ["WEBHOOK_URL", "absolute URL"]),
        ({"WEBHOOK_URL": "ftp://example.com/x"}, ["WEBHOOK_URL"]),
        ({"WEBHOOK_SECRET": "s3cret-value"}, ["WEBHOOK_SECRET", "WEBHOOK_URL"]),
        ({"SESSION_STORE": "s3"}, ["SESSION_STORE", "heroku, file, postgres"]),
        ({"SESSION_STORE": "heroku"}, ["SESSION_STORE=heroku", "HEROKU_API_KEY"]),
        ({"SESSION_STORE": "postgres"}, ["DATABASE_URL"]),
        ({"DATABASE_URL": "mysql://u:p@h/db"}, ["DATABASE_URL", "PostgreSQL"]),
        ({"CONFIG_VARS_LIMIT": "64KB"}, ["CONFIG_VARS_LIMIT"]),
        ({"SESSION_SAVE_DELAY": "soon"}, ["SESSION_SAVE_DELAY"]),
        ({"SESSION_SAVE_DELAY": "-1"}, ["SESSION_SAVE_DELAY"]),
        ({"PAIR_PHONE": "call me"}, ["PAIR_PHONE"]),
        ({"LOG_LEVEL": "LOUD"}, ["LOG_LEVEL"]),
        ({"HEROKU_API_URL": "api.heroku.com"}, ["HEROKU_API_URL"]),
        ({"SEND_RATE_LIMIT": "fast"}, ["SEND_RATE_LIMIT", "whole number"]),
        ({"SEND_RATE_LIMIT": "-1"}, ["SEND_RATE_LIMIT", "between 0"]),
        ({"UNREACHABLE_GRACE": "0"}, ["UNREACHABLE_GRACE", "above 0"]),
        ({"UNREACHABLE_GRACE": "a minute"}, ["UNREACHABLE_GRACE"]),
    ],
)
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(ConfigError) as info:
        load_config(env)
    message = str(info.value)
    for name in names:
        assert name in message
    assert "\n" not in message


def test_errors_never_echo_secrets():
    with pytest.raises(ConfigError) as info:
        load_config({"HEROKU_API_KEY": "hrku-supersecret-token"})
    assert "supersecret" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config({"WEBHOOK_URL": "gopher://hooks.example/path?token=abcdef123"})
    assert "abcdef123" not in str(info.value)


def test_store_is_chosen_from_the_credentials_present():
    heroku = load_config({"HEROKU_API_KEY": "t0ken-abcdef", "HEROKU_APP_NAME": "bot"})
    assert heroku.session_store == "heroku"
    pg = load_config({"DATABASE_URL": "postgres://u:p@localhost:5432/db"})
    assert pg.session_store == "postgres"
    forced = load_config(
        {"DATABASE_URL": "postgres://u:p@h/db", "HEROKU_API_KEY": "t0ken-abcdef", "HEROKU_APP_NAME": "bot",
         "SESSION_STORE": "heroku"}
    )
    assert forced.session_store == "heroku"


def test_features_line_has_no_secret_values():
    cfg = load_config(
        {"HEROKU_API_KEY": "t0ken-abcdef", "HEROKU_APP_NAME": "bot", "API_KEY": "key-987654",
         "WHATSAPP_SESSION": "H4sIAAAAsnapshot", "WEBHOOK_URL": "https://hooks.example/in",
         "WEBHOOK_SECRET": "hmac-secret-1"}
    )
    line = cfg.features()
    assert "store=heroku" in line and "webhook=on" in line and "api_key=set" in line
    for secret in cfg.secrets():
        assert secret not in line
    assert "t0ken" not in repr(cfg) and "key-987654" not in repr(cfg)


def test_a_non_ascii_api_key_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as info:
        load_config({"API_KEY": "pässwört-0123456789abc"})
    assert "pässwört" not in str(info.value) and "0123456789" not in str(info.value)


def test_a_short_api_key_works_but_starts_with_a_warning_that_names_the_risk():
    short = load_config({"API_KEY": "abc123"})
    assert short.api_key == "abc123"
    (warning,) = short.warnings()
    assert "API_KEY" in warning and "16" in warning and "guesses" in warning and "abc123" not in warning
    assert load_config({"API_KEY": "k" * 16}).warnings() == []


def test_heroku_app_name_alone_as_runtime_dyno_metadata_sets_it():
    local = load_config({"HEROKU_APP_NAME": "my-bot"})
    assert local.session_store == "file" and local.warnings() == [] and not local.on_heroku
    on_heroku = load_config({"HEROKU_APP_NAME": "my-bot", "DYNO": "web.1", "API_KEY": "k" * 24})
    assert on_heroku.on_heroku and on_heroku.session_store == "file"
    (warning,) = on_heroku.warnings()
    assert "HEROKU_API_KEY" in warning and "restart" in warning
    both = load_config({"HEROKU_APP_NAME": "my-bot", "HEROKU_API_KEY": "t0ken-abcdef", "DYNO": "web.1"})
    assert both.session_store == "heroku" and both.warnings() == []


def test_a_local_run_without_api_key_generates_one_in_a_private_file(tmp_path):
    cfg = load_config({"SESSION_DIR": str(tmp_path / "session")})
    local = with_local_api_key(cfg)
    assert local.api_key and len(local.api_key) >= 16 and local.generated_key_file == tmp_path / "session.api-key"
    assert (tmp_path / "session.api-key").read_text().strip() == local.api_key
    assert stat.S_IMODE((tmp_path / "session.api-key").stat().st_mode) == 0o600
    assert with_local_api_key(cfg).api_key == local.api_key  # the next start reuses it
    assert local.api_key not in local.features() and "generated" in local.features()
    given = load_config({"SESSION_DIR": str(tmp_path / "s2"), "API_KEY": "k" * 20})
    assert with_local_api_key(given) is given
    heroku = load_config({"SESSION_DIR": str(tmp_path / "s3"), "DYNO": "web.1"})
    assert with_local_api_key(heroku).api_key is None and not (tmp_path / "s3.api-key").exists()


KNOWN_KEY = "key-someone-else-knows-0123456789"


def _fifo(path):
    os.mkfifo(path, 0o600)


def _refused_key_files(tmp_path):
    """name -> (make it at path, words the refusal must say)."""
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text(KNOWN_KEY + "\n")
    elsewhere.chmod(0o600)
    return {
        "symlink to a key file": (lambda p: p.symlink_to(elsewhere), ["symbolic link"]),
        "dangling symlink": (lambda p: p.symlink_to(tmp_path / "nothing-here"), ["symbolic link"]),
        "readable by others": (lambda p: (p.write_text(KNOWN_KEY + "\n"), p.chmod(0o644)), ["0644", "chmod 600"]),
        "writable by the group": (lambda p: (p.write_text(KNOWN_KEY + "\n"), p.chmod(0o620)), ["0620"]),
        "a directory": (lambda p: p.mkdir(), ["not a regular file"]),
        "a fifo": (_fifo, ["not a regular file"]),
    }


@pytest.mark.parametrize("case", ["symlink to a key file", "dangling symlink", "readable by others",
                                  "writable by the group", "a directory", "a fifo"])
def test_an_api_key_file_that_is_a_link_or_open_to_others_is_refused_with_one_line(tmp_path, case):
    make, words = _refused_key_files(tmp_path)[case]
    cfg = load_config({"SESSION_DIR": str(tmp_path / "session")})
    path = tmp_path / "session.api-key"
    make(path)
    before = (os.lstat(path).st_mode, os.path.islink(path) and os.readlink(path))
    outcome = {}

    def call():
        try:
            outcome["cfg"] = with_local_api_key(cfg)
        except ConfigError as exc:
            outcome["error"] = str(exc)

    # Old code opened a FIFO for reading and hung there: a deadline, then unblock it by opening the
    # other end, so the thread ends either way.
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        raise AssertionError("reading the key file hung")
    assert "error" in outcome, f"key file accepted: generated_key_file={outcome['cfg'].generated_key_file}"
    message = outcome["error"]
    for word in words:
        assert word in message, message
    assert "\n" not in message and KNOWN_KEY not in message and str(path) in message
    # Refused, not replaced: the file (or link) is as the owner left it.
    assert (os.lstat(path).st_mode, os.path.islink(path) and os.readlink(path)) == before
    assert (tmp_path / "elsewhere.txt").read_text() == KNOWN_KEY + "\n"


def test_an_api_key_file_of_another_user_is_refused(tmp_path, monkeypatch):
    cfg = load_config({"SESSION_DIR": str(tmp_path / "session")})
    path = tmp_path / "session.api-key"
    path.write_text(KNOWN_KEY + "\n")
    path.chmod(0o600)
    owner = path.stat().st_uid
    # The file stays ours; the process pretends to be someone else (no root needed to test the check).
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(ConfigError) as info:
        with_local_api_key(cfg)
    assert "another user" in str(info.value) and f"uid {owner}" in str(info.value)
    monkeypatch.undo()
    assert with_local_api_key(cfg).api_key == KNOWN_KEY  # the same file, ours and private: used
