"""SCHEMA_CACHE_DIR: neonize's empty schema made once and kept for the next process, only where nobody
else may write (snapshot/rebuild.py). Real neonize migrations, run in a child process as at a restore."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from tests.support.harness import ROOT

# A fresh process asks for the template and says where it is and whether it ran neonize to make it.
_ASK = """
import json, snapshot.rebuild as r, neonize_schema
made = []
real = neonize_schema.run_migrations
r.run_migrations = lambda *a, **k: made.append(1) or real(*a, **k)
t = r.neonize_template()
print(json.dumps({"path": t.path, "version": t.version, "made": len(made)}))
"""


def ask(cache_dir) -> dict:
    env = dict(os.environ)
    env.pop("SCHEMA_CACHE_DIR", None)
    if cache_dir is not None:
        env["SCHEMA_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run([sys.executable, "-c", _ASK], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def cache_dir(tmp_path):
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    return directory


def test_the_first_process_makes_the_template_and_the_next_reuses_it(cache_dir):
    first = ask(cache_dir)
    second = ask(cache_dir)
    assert first["made"] == 1 and second["made"] == 0
    assert first["path"] == second["path"] and os.path.dirname(first["path"]) == str(cache_dir)
    assert first["version"] == second["version"] and first["version"]
    assert os.listdir(cache_dir) == [os.path.basename(first["path"])]  # no temp dir left behind
    assert os.stat(first["path"]).st_mode & 0o777 == 0o400
    with sqlite3.connect(f"file:{first['path']}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM whatsmeow_device").fetchone() == (0,)


def test_without_the_setting_every_process_makes_its_own_and_removes_it(tmp_path):
    answer = ask(None)
    assert answer["made"] == 1
    assert not os.path.exists(answer["path"])  # removed when the process ended


def test_a_directory_others_may_write_to_is_not_used(cache_dir):
    cache_dir.chmod(0o777)
    answer = ask(cache_dir)
    assert answer["made"] == 1 and not answer["path"].startswith(str(cache_dir))
    assert os.listdir(cache_dir) == []


def test_a_cached_file_that_is_writable_or_not_a_schema_is_made_again(cache_dir):
    first = ask(cache_dir)
    os.chmod(first["path"], 0o600)  # writable: someone may have changed it since
    again = ask(cache_dir)
    assert again["made"] == 1 and again["path"] == first["path"]
    assert os.stat(again["path"]).st_mode & 0o777 == 0o400
    os.chmod(first["path"], 0o600)
    with open(first["path"], "wb") as f:
        f.write(b"not a database")
    os.chmod(first["path"], 0o400)
    assert ask(cache_dir)["made"] == 1


def test_a_link_in_place_of_the_template_is_not_followed(cache_dir, tmp_path):
    target = ask(None)  # ends with the process: only its name is needed
    name = f"neonize-{importlib.metadata.version('neonize')}-schema.db"
    elsewhere = tmp_path / "elsewhere.db"
    elsewhere.write_bytes(b"")
    os.symlink(elsewhere, cache_dir / name)
    answer = ask(cache_dir)
    assert answer["made"] == 1 and target["made"] == 1
    assert not os.path.islink(cache_dir / name) and elsewhere.read_bytes() == b""
