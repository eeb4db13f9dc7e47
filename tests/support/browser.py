"""A headless Chromium for tests, driven by Playwright (pip `playwright`).

Playwright's own browser download is not used: the browser is the distribution's Chromium
(`apt-get install chromium`; .ci/run installs it), or CHROMIUM_PATH. Without one, browser tests skip
with a warning, or fail when REQUIRE_BROWSER_TESTS=1 (CI).
"""

from __future__ import annotations

import os
import shutil

# Root needs --no-sandbox; the rest keeps Chromium from talking to Google during a test.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserUnavailable(RuntimeError):
    """No headless browser can be started here; the message says why."""


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in _NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def launch(playwright):
    """A headless Chromium (Playwright Browser); Playwright gives it a fresh temp profile."""
    executable = find_chromium()
    if executable is None:
        raise BrowserUnavailable("no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)")
    try:
        return playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
    except Exception as exc:  # playwright.Error: the binary is there but does not start
        raise BrowserUnavailable(f"{executable} did not start: {exc}") from None
