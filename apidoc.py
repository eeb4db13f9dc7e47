"""The API's own description: openapi.yaml (next to this file, the data we maintain), loaded once and
served as JSON by GET /api/openapi.json.

The document is read on first use, not at import or boot: a mistake in it must never stop the bot
from starting (tests/test_openapi.py validates it before it ships).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import yaml

PATH = Path(__file__).with_name("openapi.yaml")
# libyaml's parser when PyYAML's wheel has it (it does on Linux): ten times faster than the pure one.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def document() -> dict:
    """openapi.yaml as a dict (safe_load: plain data, no Python objects)."""
    with PATH.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_Loader)  # noqa: S506 (a safe loader)


def served(host: str, scheme: str) -> str:
    """The document as JSON, with `servers` naming the address it was fetched from, so a tool that
    imports its URL (Postman, Insomnia, Swagger UI) sends its requests to this bot.

    `scheme` is what the client used: behind Heroku's router the bot sees http while the client used
    https (the router's X-Forwarded-Proto says so)."""
    scheme = scheme if scheme in ("http", "https") else "http"
    servers = [{"url": f"{scheme}://{host}", "description": "this bot"}] if host else []
    # Key order as written in the YAML (openapi, info, ..., paths): the order a person reads it in.
    return json.dumps({**document(), "servers": servers}, ensure_ascii=False)
