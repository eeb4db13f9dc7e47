"""A small client for the one resource of Heroku's Platform API the bot uses: an app's config vars.

`GET /apps/{app}/config-vars` reads them all, `PATCH` sets or (with null) removes keys. Every PATCH
creates a release and restarts the dyno, so the store above this client decides *whether* to write;
this module only makes the calls: typed errors with a hint (see errors.py), bounded retries, and one
overall deadline per call so a save never outlives Heroku's 30 s router limit, whatever the API does.

Retrying is written out here rather than delegated to urllib3's `Retry`: urllib3 bounds attempts and
per-attempt timeouts, but not the time all attempts take together, which is the bound that matters.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from typing import Any
from urllib.parse import quote

import requests
from urllib3.util.retry import Retry

from config import HEROKU_API_URL
from errors import BotError
from redaction import mask

__version__ = "0.1.0"
USER_AGENT = f"whatsapp-heroku-bot/{__version__}"
HEROKU_ACCEPT = "application/vnd.heroku+json; version=3"

TOKEN_HINT = (
    "create a long-lived token with `heroku authorizations:create --description whatsapp-bot "
    "--scope read-protected,write-protected` and set it with `heroku config:set HEROKU_API_KEY=<token>`"
)

_LONG_RUN = re.compile(r"[A-Za-z0-9+/=_-]{48,}")

# Answers that say "try again": rate limiting and the gateway errors of a platform having a moment.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Errors, one subclass per thing a user can act on
# --------------------------------------------------------------------------------------------


class StoreError(BotError):
    """A snapshot store failed. `str()` is safe to log: it never holds the token or a snapshot."""
    summary = "the session store answered unexpectedly"

    hint = "see the message above"


class StoreConfigError(StoreError):
    """The store's settings are incomplete or contradictory (a start error)."""
    summary = "the session store's settings are incomplete"


class AuthenticationFailed(StoreError):
    summary = "Heroku's Platform API refused the token"
    hint = f"HEROKU_API_KEY is invalid or expired: {TOKEN_HINT}"


class PermissionDenied(StoreError):
    summary = "Heroku's Platform API denied access to the app's config vars"
    hint = (
        "the token may not read or write this app's config vars: it needs the read-protected and "
        "write-protected scopes (or global), and its user must have access to the app; " + TOKEN_HINT
    )


class AppNotFound(StoreError):
    summary = "Heroku's Platform API does not know the app"
    hint = "check HEROKU_APP_NAME (`heroku apps` lists the apps this account can see)"


class ValueRejected(StoreError):
    summary = "Heroku's Platform API refused the new value"
    hint = (
        "Heroku refused the value; if it is about size, remove config vars you no longer need "
        "(`heroku config`) or lower CONFIG_VARS_LIMIT so snapshots are built smaller"
    )


class RateLimited(StoreError):
    summary = "Heroku's Platform API rate limit is used up"
    hint = (
        "the account's Platform API rate limit is used up (tokens refill within minutes); "
        "try again later and check no other tool is using the same account heavily"
    )

    def __init__(self, message: str, hint: str | None = None, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, hint, **kw)
        self.retry_after = retry_after


class PlatformUnavailable(StoreError):
    summary = "Heroku's Platform API failed"
    hint = "Heroku's API is having trouble; see https://status.heroku.com and try again later"


class PlatformTimeout(StoreError):
    summary = "Heroku's Platform API did not answer in time"
    hint = "Heroku's API did not answer in time; see https://status.heroku.com and try again later"


class PlatformConnectionError(StoreError):
    summary = "no connection to Heroku's Platform API"
    hint = "check the network, DNS and HEROKU_API_URL, then try again"


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class ConfigVarsClient:
    """The config vars of one Heroku app. Not thread-safe on its own: the store serialises calls.

    `timeout` is per attempt (connect, read); `deadline` (a `time.monotonic()` value) given to a call
    bounds all its attempts together. A read that timed out is retried once at most: the request may
    hang again, and a PATCH that did arrive is applied once whatever we repeat (it sets values)."""

    def __init__(self, app_name: str, token: str, *, api_url: str = HEROKU_API_URL,
                 timeout: float | tuple[float, float] = (5, 15), max_retries: int = 3,
                 backoff_factor: float = 0.5, give_up_after: float = 30.0,
                 session: requests.Session | None = None):
        self.app_name = app_name
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.give_up_after = give_up_after  # a Retry-After longer than this is reported, not slept
        self._token = token
        self._url = f"{self.api_url}/apps/{quote(app_name, safe='')}/config-vars"
        self._session = session or requests.Session()
        self._session.headers.update({
            "Accept": HEROKU_ACCEPT,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        })
        # No transport-level retries (requests' default adapter makes none): the loop in _request
        # owns them, and the deadline with them.

    def read(self, *, deadline: float | None = None, secrets: tuple = ()) -> dict:
        return self._request("GET", None, action="read the config vars of", deadline=deadline, secrets=secrets)

    def patch(self, changes: dict, *, deadline: float | None = None, secrets: tuple = ()) -> dict:
        """Set keys (a value) or remove them (None); returns the vars as Heroku has them afterwards."""
        action = "write the config vars of" if any(v is not None for v in changes.values()) \
            else "remove a config var of"
        return self._request("PATCH", changes, action=action, deadline=deadline, secrets=secrets)

    def close(self) -> None:
        self._session.close()

    # -- one call, its retries and its deadline ----------------------------------------------

    def _request(self, method: str, body: dict | None, *, action: str, deadline: float | None,
                 secrets: tuple) -> dict:
        what = f"{action} Heroku app {self.app_name!r}"
        hide = (self._token, *secrets)
        data = json.dumps(body) if body is not None else None
        deadline = math.inf if deadline is None else deadline
        failures = 0
        read_timeouts = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timed_out(what)
            timeout = (min(self.timeout[0], left), min(self.timeout[1], left))
            try:
                response = self._session.request(method, self._url, data=data, timeout=timeout,
                                                 headers={"Authorization": f"Bearer {self._token}"})
            except requests.ConnectTimeout:
                error: StoreError = self._timed_out(what)
            except requests.ReadTimeout:
                read_timeouts += 1
                error = self._timed_out(what)
                if read_timeouts > 1:
                    raise error from None
            except requests.RequestException as exc:
                error = PlatformConnectionError(mask(
                    f"Could not {what}: no connection to {self.api_url} ({_cause_name(exc)})", hide))
            else:
                if response.status_code == 200:
                    return self._json_object(response, what)
                error = self._http_error(response, what, hide)
                if response.status_code not in RETRY_STATUSES:
                    raise error from None
                retry_after = getattr(error, "retry_after", None)
                if retry_after is not None and retry_after > self.give_up_after:
                    raise error from None  # Heroku asks for a long pause: report it, do not block
            failures += 1
            if failures > self.max_retries:
                raise error from None
            wait = self._backoff(failures, getattr(error, "retry_after", None))
            if time.monotonic() + wait >= deadline:
                raise error from None  # the deadline comes first: the last answer is the result
            log.info("%s failed (%s); retry %d of %d in %.1fs", what, type(error).__name__, failures,
                     self.max_retries, wait)
            time.sleep(wait)

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        # urllib3's schedule: the first retry at once, then backoff_factor * 2**(n-1).
        return 0.0 if failures <= 1 else self.backoff_factor * 2 ** (failures - 1)

    def _timed_out(self, what: str) -> StoreError:
        connect, read = self.timeout
        return PlatformTimeout(f"Could not {what}: {self.api_url} did not answer in time "
                               f"(connect {connect:g}s, read {read:g}s per attempt, retries included)")

    @staticmethod
    def _json_object(response: requests.Response, what: str) -> dict:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise PlatformUnavailable(f"Could not {what}: the API answered 200 without a JSON object",
                                      status=200)
        return data

    def _http_error(self, response: requests.Response, what: str, hide: tuple) -> StoreError:
        status = response.status_code
        error_id, message = "", ""
        try:
            body = response.json()
            if isinstance(body, dict):
                error_id = str(body.get("id") or "")
                message = str(body.get("message") or "")
        except ValueError:
            pass
        # The server's words: masked, and no long token-like run at all (it is never an explanation).
        message = _LONG_RUN.sub("[redacted]", mask(message, hide))[:300]
        error_id = _LONG_RUN.sub("[redacted]", mask(error_id, hide))[:60]
        text = f"Could not {what}: HTTP {status}" + (f" {error_id}" if error_id else "")
        if message:
            text += f": {message}"
        if status == 401:
            return AuthenticationFailed(text, status=status)
        if status == 403:
            if error_id == "suspended":
                return PermissionDenied(text, "the app or its account is suspended; see the Heroku "
                                        "dashboard or contact support", status=status)
            return PermissionDenied(text, status=status)
        if status == 404:
            return AppNotFound(text, f"check HEROKU_APP_NAME (now {self.app_name!r}); `heroku apps` lists "
                               "the apps this account can see", status=status)
        if status == 422:
            return ValueRejected(text, status=status)
        if status == 429:
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            if retry_after is not None:
                text += f" (Heroku asks to wait {retry_after:g}s)"
            return RateLimited(text, status=status, retry_after=retry_after)
        if status >= 500:
            return PlatformUnavailable(text, status=status)
        return StoreError(text, "unexpected answer from the Platform API; check HEROKU_API_URL and the "
                          "message above", status=status)


def _cause_name(exc: BaseException) -> str:
    """The innermost cause's class name (NewConnectionError, NameResolutionError...), never its text:
    urllib3's texts can quote the request."""
    seen = exc
    while True:
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        inner = inner or getattr(seen, "reason", None)
        if not isinstance(inner, BaseException) or inner is seen:
            return type(seen).__name__
        seen = inner


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return Retry().parse_retry_after(value)
    except Exception:
        return None
