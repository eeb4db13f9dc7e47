"""deferred_imports.py: what neonize imports for features the bot does not use runs only once used."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import pytest

import deferred_imports
from tests.support.harness import ROOT

# A fresh interpreter: the test's own process may have imported httpx already (then nothing is deferred).
_PROBE = textwrap.dedent("""
    import json, sys
    import app, neonize_lib
    neonize_lib.load()
    import deferred_imports
    seen = {"deferredAfterLoad": [m for m in ("httpx", "soupsieve") if deferred_imports.is_deferred(m)],
            "loadedParts": sorted(m for m in sys.modules if m.startswith(("httpx.", "soupsieve.")))}
    import neonize.utils.iofile as iofile  # neonize's own `import httpx` holds the stand-in
    client_class = iofile.httpx.AsyncClient
    import httpx
    seen["sameClass"] = httpx.AsyncClient is client_class and type(httpx).__name__ == "module"
    import bs4  # linkpreview's parser: a CSS select goes through the deferred soupsieve
    seen["select"] = [p.text for p in bs4.BeautifulSoup("<p class=a>x</p><p>y</p>", "html.parser").select("p.a")]
    seen["deferredAfterUse"] = [m for m in ("httpx", "soupsieve") if deferred_imports.is_deferred(m)]
    print(json.dumps(seen))
""")


def test_the_bots_neonize_load_leaves_httpx_and_soupsieve_unrun_until_something_reads_them():
    run = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen == {"deferredAfterLoad": ["httpx", "soupsieve"], "loadedParts": [], "sameClass": True,
                    "select": ["x"], "deferredAfterUse": []}


def test_an_imported_or_missing_module_is_left_to_the_normal_import():
    import json as already_imported
    assert deferred_imports.defer("json", "no_such_module_anywhere") == []
    assert sys.modules["json"] is already_imported and "no_such_module_anywhere" not in sys.modules


def test_a_deferred_module_that_fails_to_import_fails_at_first_use_and_can_be_used_once_mended(tmp_path, monkeypatch):
    module = tmp_path / "deferred_probe_mod.py"
    module.write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        assert deferred_imports.defer("deferred_probe_mod") == ["deferred_probe_mod"]
        import deferred_probe_mod as held  # what a library's `import X` binds: the stand-in
        with pytest.raises(RuntimeError, match="broken at import"):
            held.VALUE
        assert deferred_imports.is_deferred("deferred_probe_mod")  # put back: the next read tries again
        module.write_text("VALUE = 42\n")
        importlib.invalidate_caches()
        assert held.VALUE == 42
        assert not deferred_imports.is_deferred("deferred_probe_mod")
        assert sys.modules["deferred_probe_mod"].VALUE == 42
    finally:
        sys.modules.pop("deferred_probe_mod", None)
