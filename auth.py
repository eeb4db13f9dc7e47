"""Who may call a protected endpoint: the API key, from this app's own pages or from no page at all.

`require_key` takes the key in `Authorization: Bearer` or `X-Api-Key` only: headers a page on another
site cannot make a browser send. `require_key(basic=True)` (for `GET /qr`, which a person opens in a
browser) also takes HTTP Basic with the key as password. A browser resends Basic credentials on its
own, to any request for this host, whoever's page makes it; so Basic never authorizes a
state-changing endpoint, and every protected endpoint refuses a request whose `Origin` (set by
browsers on cross-site requests) is not this app.
"""

from __future__ import annotations

import base64
import hmac
from functools import wraps
from urllib.parse import urlsplit

from flask import current_app, jsonify, request


def require_key(view=None, *, basic: bool = False):
    """Decorator for protected views: 503 when no API_KEY is configured, 403 for a request from another
    site's page, 401 for a wrong or missing key."""
    if view is None:
        return lambda v: require_key(v, basic=basic)

    @wraps(view)
    def wrapper(*args, **kwargs):
        cfg = current_app.config["BOT_CONFIG"]
        if not cfg.api_key:
            how = (
                "heroku config:set API_KEY=$(openssl rand -hex 24)" if cfg.on_heroku
                else "API_KEY=$(openssl rand -hex 24) in the environment of gunicorn, then restart it"
            )
            return _refuse(503, "api_key_not_set", f"set API_KEY to use this endpoint ({how})")
        if not same_origin():
            return _refuse(
                403, "cross_origin",
                "this endpoint refuses requests made by a page of another site (its Origin header is "
                "not this app's address)",
            )
        if not has_key(cfg.api_key, basic=basic):
            response, status = _refuse(
                401, "unauthorized",
                "send the API key as 'Authorization: Bearer <API_KEY>' or 'X-Api-Key'"
                + (" (a browser: any user name, the key as password)" if basic else ""),
            )
            # Basic only where it is accepted: it lets a browser on /qr ask for the key.
            response.headers["WWW-Authenticate"] = (
                'Basic realm="whatsapp bot", charset="UTF-8"' if basic else 'Bearer realm="whatsapp bot"'
            )
            return response, status
        return view(*args, **kwargs)

    return wrapper


def is_key_holder() -> bool:
    """For endpoints anyone may call that show more to a key holder (the session status)."""
    api_key = current_app.config["BOT_CONFIG"].api_key
    return bool(api_key) and has_key(api_key) and same_origin()


def _refuse(status: int, code: str, message: str):
    return jsonify(error=code, message=message), status


def same_origin() -> bool:
    """True without an `Origin` header (curl, scripts, same-site navigations) or when it names this app.

    "This app" is the host (and port) the request was sent to: `Host`, or `X-Forwarded-Host` behind a
    proxy that sets it (Heroku's router keeps `Host` as the client sent it). The scheme is not compared:
    behind the router the bot sees http while the browser used https. A host without a port matches any
    port of that host name; an explicit port must match the origin's (or its scheme's default).
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
        origin_host = (parts.hostname or "").lower()
        origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:  # a malformed port
        return False
    if not origin_host or parts.scheme.lower() not in ("http", "https"):
        return False  # "null" (a sandboxed frame, a file:// page) and anything stranger
    candidates = [request.headers.get("Host", "")]
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded:
        candidates.append(forwarded.split(",")[0])
    for candidate in candidates:
        try:
            target = urlsplit("//" + candidate.strip())
            host, port = (target.hostname or "").lower(), target.port
        except ValueError:
            continue
        if host and host == origin_host and (port is None or port == origin_port):
            return True
    return False


def has_key(api_key: str, *, basic: bool = False) -> bool:
    """Bearer or X-Api-Key (and HTTP Basic with the key as password when `basic`); constant-time."""
    offered = []
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        offered.append(value.strip())
    elif scheme.lower() == "basic" and basic:
        try:
            offered.append(base64.b64decode(value.strip(), validate=True).decode().partition(":")[2])
        except (ValueError, UnicodeDecodeError):
            pass
    if "X-Api-Key" in request.headers:
        offered.append(request.headers["X-Api-Key"].strip())
    expected = api_key.encode()
    return any(hmac.compare_digest(candidate.encode(), expected) for candidate in offered)


