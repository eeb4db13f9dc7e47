"""Where session snapshots live.

Two stores behind one small interface (`SnapshotStore`):

* `HerokuConfigVarStore` keeps the snapshot in a Heroku config var through the Platform API.
  Every change of a config var creates a release and restarts the dyno, so a save is a rare,
  deliberate event: it never writes a value equal to the stored one, checks the size budget
  shared by all config vars first, and logs the coming restart before it writes.
* `LocalFileStore` keeps it in a file (the default when no Heroku credentials are set), written
  atomically with mode 0600, and applies the same budget so a laptop run refuses what Heroku
  would refuse.

No error text and no log line ever contains the API token or the snapshot itself.
"""

from __future__ import annotations

import abc
import datetime as _dt
import errno
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (ConnectTimeoutError, MaxRetryError, NewConnectionError,
                                ReadTimeoutError)
from urllib3.util.retry import Retry

from fsutil import fsync_path

__version__ = "0.1.0"
USER_AGENT = f"whatsapp-heroku-bot/{__version__}"

DEFAULT_KEY = "WHATSAPP_SESSION"
DEFAULT_API_URL = "https://api.heroku.com"
# Heroku documents one limit for all config vars of an app, keys and values together
# (64 KB today, 32 KB before); CONFIG_VARS_LIMIT overrides it.
DEFAULT_LIMIT = 65536
HEROKU_ACCEPT = "application/vnd.heroku+json; version=3"

TOKEN_HINT = (
    "create a long-lived token with `heroku authorizations:create --description whatsapp-bot "
    "--scope read-protected,write-protected` and set it with `heroku config:set HEROKU_API_KEY=<token>`"
)

log = logging.getLogger(__name__)

# Pieces of a snapshot or token in a server's answer (see HerokuConfigVarStore._redact).
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{12,}")
_LONG_RUN = re.compile(r"[A-Za-z0-9+/=_-]{48,}")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Room for the snapshot in the config vars' shared size limit (all sizes in bytes).

    `ceiling` is a hard limit: a larger value would be refused. `target` is what a snapshot
    should aim for, a quarter of the limit, so the owner can still add config vars of their own.
    """

    limit: int
    used_by_others: int
    ceiling: int
    target: int
    stored_size: int = 0  # size of the value this key holds now (0 when absent)

    @classmethod
    def compute(cls, limit: int, used_by_others: int, key: str, stored_size: int = 0) -> "Budget":
        ceiling = max(0, limit - used_by_others - _size(key))
        target = max(0, min(ceiling, limit // 4 - _size(key)))
        return cls(limit, used_by_others, ceiling, target, stored_size)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SaveResult:
    changed: bool
    size: int
    restart_expected: bool = False
    budget: Budget | None = None
    saved_at: str | None = None  # ISO 8601, set when something was written
    reason: str = ""  # why nothing was written ("unchanged"), empty when changed


# --------------------------------------------------------------------------------------------
# Errors, in the style of requests: one base class, one subclass per thing a user can act on
# --------------------------------------------------------------------------------------------


class StoreError(Exception):
    """A snapshot store failed. `str()` is safe to log: it never holds the token or a snapshot."""

    default_hint = "see the message above"
    #: Fixed words for what went wrong, for readers without the API key (no upstream text in them).
    summary = "the session store answered unexpectedly"

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})"

    def as_dict(self) -> dict:
        return {"type": type(self).__name__, "status": self.status, "message": self.message,
                "hint": self.hint}

    def public_text(self) -> str:
        """Our own fixed words, the HTTP status and the class's hint: nothing the server wrote, no
        app name. For the status endpoint without the key (the full text needs the key)."""
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{self.summary}{status} (hint: {self.default_hint})"


class StoreConfigError(StoreError):
    """The store's settings are incomplete or contradictory (a start error)."""

    summary = "the session store's settings are incomplete"


class AuthenticationFailed(StoreError):
    summary = "Heroku's Platform API refused the token"
    default_hint = f"HEROKU_API_KEY is invalid or expired: {TOKEN_HINT}"


class PermissionDenied(StoreError):
    summary = "Heroku's Platform API denied access to the app's config vars"
    default_hint = (
        "the token may not read or write this app's config vars: it needs the read-protected and "
        "write-protected scopes (or global), and its user must have access to the app; "
        + TOKEN_HINT
    )


class AppNotFound(StoreError):
    summary = "Heroku's Platform API does not know the app"
    default_hint = "check HEROKU_APP_NAME (`heroku apps` lists the apps this account can see)"


class ValueRejected(StoreError):
    summary = "Heroku's Platform API refused the new value"
    default_hint = (
        "Heroku refused the value; if it is about size, remove config vars you no longer need "
        "(`heroku config`) or lower CONFIG_VARS_LIMIT so snapshots are built smaller"
    )


class RateLimited(StoreError):
    summary = "Heroku's Platform API rate limit is used up"
    default_hint = (
        "the account's Platform API rate limit is used up (tokens refill within minutes); "
        "try again later and check no other tool is using the same account heavily"
    )

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class PlatformUnavailable(StoreError):
    summary = "Heroku's Platform API failed"
    default_hint = "Heroku's API is having trouble; see https://status.heroku.com and try again later"


class PlatformTimeout(StoreError):
    summary = "Heroku's Platform API did not answer in time"
    default_hint = "Heroku's API did not answer in time; see https://status.heroku.com and try again later"


class PlatformConnectionError(StoreError):
    summary = "no connection to Heroku's Platform API"
    default_hint = "check the network, DNS and HEROKU_API_URL, then try again"


class BudgetExceeded(StoreError):
    summary = "the session is larger than the room the config vars leave"
    default_hint = (
        "remove config vars you no longer need (`heroku config`), or let the snapshot builder "
        "leave out optional data so the snapshot fits"
    )


class LocalStoreError(StoreError):
    summary = "the local snapshot file could not be read or written"
    default_hint = "check that the snapshot file's directory exists, is writable and the disk is not full"


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


def _size(text: str) -> int:
    # Config vars are measured in bytes; snapshots are base64 (ASCII) so this equals len(),
    # but other vars may hold non-ASCII text and bytes are the conservative measure.
    return len(text.encode("utf-8"))


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _check_snapshot_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"a snapshot is text, not {type(text).__name__}")
    if not text:
        # An empty value would replace a good snapshot with nothing; clear() is the way to remove.
        raise ValueError("refusing to save an empty snapshot; use clear() to remove it")
    return text


class SnapshotStore(abc.ABC):
    """Where a snapshot lives. Thread-safe: one save or clear at a time."""

    kind: str = ""

    def __init__(self, *, key: str = DEFAULT_KEY, limit: int = DEFAULT_LIMIT):
        if not key:
            raise ValueError("key must not be empty")
        if limit <= 0:
            raise ValueError("limit must be positive")
        self.key = key
        self.limit = int(limit)
        self._lock = threading.RLock()
        self._last_saved_at: str | None = None
        self._last_error: StoreError | None = None

    @abc.abstractmethod
    def load(self) -> str | None:
        """The stored snapshot, or None when there is none."""

    @abc.abstractmethod
    def save(self, text: str, *, force: bool = False, budget: Budget | None = None) -> SaveResult:
        """Store `text`; writes nothing when it equals the stored value, unless `force`.

        `budget`: one the caller just fetched (to pick the snapshot's tier), so it is not fetched
        a second time for the same save."""

    @abc.abstractmethod
    def clear(self) -> bool:
        """Remove the snapshot; returns whether something was removed."""

    @abc.abstractmethod
    def budget(self) -> Budget:
        """How much room the snapshot has."""

    @abc.abstractmethod
    def _where(self) -> dict:
        """Where the snapshot lives, for describe() (never a secret)."""

    @abc.abstractmethod
    def _known_value(self) -> str | None:
        """The stored value as far as known without network calls."""

    def describe(self, *, full: bool = True) -> dict:
        """Where the snapshot is and how big; `full=False` (for readers without the API key) gives
        the last error in our own fixed words only."""
        value = self._known_value()
        error = self._last_error
        if error and not full:
            error = {"type": type(error).__name__, "status": error.status, "message": error.public_text()}
        elif error:
            error = error.as_dict()
        return {
            "kind": self.kind,
            **self._where(),
            "key": self.key,
            "limit": self.limit,
            "has_value": value is not None,
            "value_size": _size(value) if value is not None else 0,
            "last_saved_at": self._last_saved_at,
            "last_error": error,
        }

    def _refuse_over_budget(self, text: str, budget: Budget) -> None:
        size = _size(text)
        if size > budget.ceiling:
            raise BudgetExceeded(
                f"snapshot is {size} bytes but only {budget.ceiling} are left for {self.key}: "
                f"other config vars use {budget.used_by_others} of the {budget.limit}-byte limit",
                status=None,
            )

    def _failed(self, error: StoreError) -> StoreError:
        self._last_error = error
        return error


# --------------------------------------------------------------------------------------------
# Heroku config var
# --------------------------------------------------------------------------------------------


class _PlatformRetry(Retry):
    """urllib3's Retry, except that it gives up instead of sleeping when the server asks to wait
    longer than `give_up_after` seconds: a save must not block a thread for an hour, and the
    caller gets RateLimited with `retry_after` to decide when to try again."""

    def __init__(self, *args: Any, give_up_after: float = 30.0, **kw: Any):
        super().__init__(*args, **kw)
        self.give_up_after = give_up_after

    def new(self, **kw: Any) -> "_PlatformRetry":
        kw.setdefault("give_up_after", self.give_up_after)
        return super().new(**kw)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        if response is not None and self.respect_retry_after_header:
            try:
                wait = self.get_retry_after(response)
            except Exception:  # an unparsable Retry-After: fall back to plain backoff
                wait = None
            if wait is not None and wait > self.give_up_after:
                # With raise_on_status=False urllib3 hands this final response to the caller.
                raise MaxRetryError(_pool, url, None)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _describe_timeout(timeout: float | tuple[float, float]) -> str:
    if isinstance(timeout, tuple):
        return f"connect {timeout[0]:g}s, read {timeout[1]:g}s"
    return f"{timeout:g}s"


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return Retry().parse_retry_after(value)
    except Exception:
        return None


class HerokuConfigVarStore(SnapshotStore):
    """The snapshot in a config var of a Heroku app, through the Platform API v3.

    A `session` passed in gets this store's default headers and retrying adapters mounted."""

    kind = "heroku"

    def __init__(self, app_name: str, api_key: str, *, initial_value: str | None = None,
                 api_url: str = DEFAULT_API_URL, limit: int = DEFAULT_LIMIT,
                 timeout: float | tuple[float, float] = (5, 15), max_retries: int = 3,
                 session: requests.Session | None = None, key: str = DEFAULT_KEY,
                 backoff_factor: float = 0.5, give_up_after: float = 30.0):
        super().__init__(key=key, limit=limit)
        app_name = (app_name or "").strip()
        token = (api_key or "").strip()  # a pasted token often carries a trailing newline
        if not app_name:
            raise StoreConfigError("HEROKU_APP_NAME is empty", hint="set HEROKU_APP_NAME to your app's name")
        if not token:
            raise StoreConfigError("HEROKU_API_KEY is empty", hint=TOKEN_HINT)
        if any(ch.isspace() or ord(ch) < 32 for ch in token):
            # requests would put such a header value into its exception text; refuse it here.
            raise AuthenticationFailed("HEROKU_API_KEY contains spaces or line breaks",
                                       hint=f"copy the token again without them; {TOKEN_HINT}")
        self.app_name = app_name
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._value: str | None = initial_value if initial_value else None
        self._pending: str | None = None  # the value being written, kept out of error texts
        self._restart_expected = False
        self._url = f"{self.api_url}/apps/{quote(app_name, safe='')}/config-vars"
        self._session = session or requests.Session()
        self._session.headers.update({
            "Accept": HEROKU_ACCEPT,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        })
        retry = _PlatformRetry(
            total=max_retries,
            # A request that timed out while reading may hang again; one more try is enough.
            read=min(max_retries, 1),
            backoff_factor=backoff_factor,
            status_forcelist=(429, 500, 502, 503, 504),
            # urllib3 leaves PATCH out by default because a PATCH *may* be non-idempotent. A
            # config-var PATCH sets keys to given values (or removes them with null): applying it
            # twice leaves the same vars as applying it once, so repeating it is safe.
            allowed_methods=frozenset({"GET", "PATCH"}),
            respect_retry_after_header=True,
            raise_on_status=False,  # the final response is mapped to our typed error
            give_up_after=give_up_after,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"HerokuConfigVarStore(app_name={self.app_name!r}, api_url={self.api_url!r}, key={self.key!r})"

    # -- interface ---------------------------------------------------------------------------

    def load(self) -> str | None:
        # The dyno was (re)started with the current config vars in its environment, so the
        # value given at construction is the stored one; booting never calls the API.
        return self._value

    def budget(self) -> Budget:
        with self._lock:
            vars_ = self._request("GET", None, action="read the config vars of")
            return self._budget_from(vars_)

    def save(self, text: str, *, force: bool = False, budget: Budget | None = None) -> SaveResult:
        text = _check_snapshot_text(text)
        with self._lock:
            if text == self._value and not force:
                return SaveResult(False, _size(text), reason="unchanged")
            self._pending = text
            try:
                return self._save_changed(text, force=force, budget=budget)
            finally:
                self._pending = None

    def _save_changed(self, text: str, *, force: bool, budget: Budget | None) -> SaveResult:
        """save() of a value that differs from the known one (or forced); runs with the lock held."""
        if budget is None:
            budget = self.budget()  # also refreshes the known value from the platform
        changed = text != self._value
        if not changed and not force:
            return SaveResult(False, _size(text), budget=budget, reason="unchanged")
        try:
            self._refuse_over_budget(text, budget)
        except StoreError as exc:
            raise self._failed(exc)
        log.warning("Saving %s (%d bytes) to Heroku app %s: Heroku will create a release and "
                    "restart the dyno", self.key, _size(text), self.app_name)
        vars_ = self._request("PATCH", {self.key: text}, action="write the config vars of")
        if vars_.get(self.key) != text:
            raise self._failed(StoreError(
                f"Heroku answered the write to app {self.app_name!r} without the new {self.key}",
                hint="try again; if it persists, check `heroku config` and `heroku releases`"))
        self._value = text
        self._restart_expected = True
        self._last_saved_at = _now_iso()
        self._last_error = None
        return SaveResult(changed, _size(text), restart_expected=True, budget=budget,
                          saved_at=self._last_saved_at)

    def clear(self) -> bool:
        with self._lock:
            if self._value is None:
                return False
            self.budget()  # refreshes the known value: someone may have removed it already
            if self._value is None:
                return False
            log.warning("Removing %s from Heroku app %s: Heroku will create a release and restart "
                        "the dyno", self.key, self.app_name)
            vars_ = self._request("PATCH", {self.key: None}, action="remove a config var of")
            if self.key in vars_:
                raise self._failed(StoreError(
                    f"Heroku answered the removal from app {self.app_name!r} but still lists {self.key}",
                    hint="try again; if it persists, run `heroku config:unset WHATSAPP_SESSION`"))
            self._value = None
            self._restart_expected = True
            self._last_saved_at = _now_iso()
            self._last_error = None
            return True

    def close(self) -> None:
        """Release pooled connections (the store is not used afterwards)."""
        self._session.close()

    def _where(self) -> dict:
        return {"app_name": self.app_name, "api_url": self.api_url,
                "restart_expected": self._restart_expected}

    def _known_value(self) -> str | None:
        return self._value

    # -- HTTP --------------------------------------------------------------------------------

    def _budget_from(self, vars_: Mapping[str, Any]) -> Budget:
        current = vars_.get(self.key)
        self._value = current if isinstance(current, str) and current else None
        used = sum(_size(str(k)) + _size(str(v)) for k, v in vars_.items()
                   if k != self.key and v is not None)
        return Budget.compute(self.limit, used, self.key, _size(self._value or ""))

    def _request(self, method: str, body: dict | None, *, action: str) -> dict:
        what = f"{action} Heroku app {self.app_name!r}"
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            response = self._session.request(
                method, self._url, headers=headers, timeout=self.timeout,
                data=json.dumps(body) if body is not None else None)
        except (requests.Timeout, requests.ConnectionError, requests.RequestException) as exc:
            raise self._failed(self._transport_error(exc, what)) from None
        if response.status_code == 200:
            try:
                data = response.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise self._failed(PlatformUnavailable(
                    f"Could not {what}: the API answered 200 without a JSON object", status=200))
            self._last_error = None
            return data
        raise self._failed(self._http_error(response, what)) from None

    def _redact(self, text: str, *secrets: str | None) -> str:
        known = [s for s in (self._token, self._value, self._pending, *secrets) if s and len(s) >= 4]
        for secret in known:
            text = text.replace(secret, "[redacted]")
        # A server that echoes the request may quote a piece of the snapshot: any run of base64 that
        # occurs in a secret goes too (whole-value replacement above misses a piece).
        return _BASE64_RUN.sub(
            lambda m: "[redacted]" if any(m[0] in secret for secret in known) else m[0], text)

    def _transport_error(self, exc: Exception, what: str) -> StoreError:
        reason = exc.args[0] if exc.args else None
        cause = reason.reason if isinstance(reason, MaxRetryError) else reason
        # urllib3's NewConnectionError (refused, DNS) subclasses ConnectTimeoutError: not a timeout.
        timed_out = not isinstance(cause, NewConnectionError) and (
            isinstance(exc, requests.Timeout)
            or isinstance(cause, (ReadTimeoutError, ConnectTimeoutError)))
        if timed_out:
            return PlatformTimeout(f"Could not {what}: {self.api_url} did not answer in time "
                                   f"({_describe_timeout(self.timeout)} per attempt, retries included)")
        detail = type(cause or exc).__name__
        return PlatformConnectionError(
            self._redact(f"Could not {what}: no connection to {self.api_url} ({detail})"))

    def _http_error(self, response: requests.Response, what: str) -> StoreError:
        status = response.status_code
        error_id, message = "", ""
        try:
            body = response.json()
            if isinstance(body, dict):
                error_id = str(body.get("id") or "")
                message = str(body.get("message") or "")
        except ValueError:
            pass
        # The server's words: redacted, and no long base64 at all (it is never an explanation).
        message = _LONG_RUN.sub("[redacted]", self._redact(message))[:300]
        error_id = _LONG_RUN.sub("[redacted]", self._redact(error_id))[:60]
        text = f"Could not {what}: HTTP {status}" + (f" {error_id}" if error_id else "")
        if message:
            text += f": {message}"
        if status == 401:
            return AuthenticationFailed(text, status=status)
        if status == 403:
            if error_id == "suspended":
                return PermissionDenied(text, status=status, hint=(
                    "the app or its account is suspended; see the Heroku dashboard or contact support"))
            return PermissionDenied(text, status=status)
        if status == 404:
            return AppNotFound(text, status=status, hint=(
                f"check HEROKU_APP_NAME (now {self.app_name!r}); `heroku apps` lists the apps "
                "this account can see"))
        if status == 422:
            return ValueRejected(text, status=status)
        if status == 429:
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            if retry_after is not None:
                text += f" (Heroku asks to wait {retry_after:g}s)"
            return RateLimited(text, status=status, retry_after=retry_after)
        if status >= 500:
            return PlatformUnavailable(text, status=status)
        return StoreError(text, status=status, hint=(
            "unexpected answer from the Platform API; check HEROKU_API_URL and the message above"))


# --------------------------------------------------------------------------------------------
# Local file
# --------------------------------------------------------------------------------------------


class LocalFileStore(SnapshotStore):
    """The snapshot in a file: the default when the bot does not run with Heroku credentials.

    The budget is computed as if this were the app's only config var, so a snapshot that
    Heroku would refuse is refused here too."""

    kind = "file"

    def __init__(self, path: str | os.PathLike, *, limit: int = DEFAULT_LIMIT, key: str = DEFAULT_KEY):
        super().__init__(key=key, limit=limit)
        self.path = Path(path)
        self._cached: str | None = None

    def __repr__(self) -> str:
        return f"LocalFileStore(path={str(self.path)!r})"

    def load(self) -> str | None:
        with self._lock:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            except (OSError, UnicodeDecodeError) as exc:
                raise self._failed(LocalStoreError(
                    f"Could not read snapshot file {self.path}: {_os_reason(exc)}")) from None
            self._cached = text.strip() or None
            return self._cached

    def budget(self) -> Budget:
        return Budget.compute(self.limit, 0, self.key, _size(self._cached or ""))

    def save(self, text: str, *, force: bool = False, budget: Budget | None = None) -> SaveResult:
        text = _check_snapshot_text(text)
        with self._lock:
            changed = text != self.load()
            if not changed and not force:
                return SaveResult(False, _size(text), reason="unchanged")
            budget = budget or self.budget()
            try:
                self._refuse_over_budget(text, budget)
                self._write_atomically(text)
            except StoreError as exc:
                raise self._failed(exc)
            self._cached = text
            self._last_saved_at = _now_iso()
            self._last_error = None
            log.info("Saved %s (%d bytes) to %s", self.key, _size(text), self.path)
            return SaveResult(changed, _size(text), restart_expected=False, budget=budget,
                              saved_at=self._last_saved_at)

    def clear(self) -> bool:
        with self._lock:
            try:
                self.path.unlink()
            except FileNotFoundError:
                self._cached = None
                return False
            except OSError as exc:
                raise self._failed(LocalStoreError(
                    f"Could not remove snapshot file {self.path}: {_os_reason(exc)}")) from None
            fsync_path(self.path.parent)
            self._cached = None
            self._last_saved_at = _now_iso()
            self._last_error = None
            log.info("Removed snapshot file %s", self.path)
            return True

    def _where(self) -> dict:
        return {"path": str(self.path.resolve())}

    def _known_value(self) -> str | None:
        try:
            return self.load()  # a small local read; describe() should tell the truth on disk
        except StoreError:
            return self._cached

    def _write_atomically(self, text: str) -> None:
        # Write a temp file in the same directory, fsync it, then rename over the old file: a
        # crash or a full disk leaves either the old snapshot or the new one, never half of one.
        parent = self.path.parent
        tmp_name = None
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent)
            with os.fdopen(fd, "w", encoding="utf-8") as tmp:
                os.fchmod(tmp.fileno(), 0o600)  # the snapshot is a login: owner only
                tmp.write(text)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, self.path)
            tmp_name = None
            fsync_path(parent)
        except OSError as exc:
            raise LocalStoreError(
                f"Could not write snapshot file {self.path}: {_os_reason(exc)}; the previous "
                "snapshot (if any) is untouched") from None
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})"
    return type(exc).__name__


# --------------------------------------------------------------------------------------------
# Choosing the store
# --------------------------------------------------------------------------------------------


def create_store(*, heroku_api_key: str | None, heroku_app_name: str | None, file_path: str | os.PathLike,
                 session_value: str | None = None, kind: str | None = None,
                 api_url: str = DEFAULT_API_URL, limit: int = DEFAULT_LIMIT) -> SnapshotStore:
    """Both Heroku settings → Heroku store; neither → local file; only one → StoreConfigError.

    `kind` ("heroku" | "file") forces a choice (SESSION_STORE); `session_value` is the snapshot
    found in the environment at boot."""
    has_key, has_app = bool((heroku_api_key or "").strip()), bool((heroku_app_name or "").strip())
    if kind not in (None, "", "heroku", "file"):
        raise StoreConfigError(f"unknown store kind {kind!r}", hint="use SESSION_STORE=heroku or file")
    if kind == "file" or (not kind and not has_key and not has_app):
        return LocalFileStore(file_path, limit=limit)
    if not (has_key and has_app):
        missing = "HEROKU_APP_NAME" if has_key else "HEROKU_API_KEY"
        raise StoreConfigError(
            f"{missing} is not set: the Heroku store needs both HEROKU_API_KEY and HEROKU_APP_NAME",
            hint=f"set {missing} (or unset both to keep the session in a local file)")
    return HerokuConfigVarStore(heroku_app_name, heroku_api_key, initial_value=session_value,
                                api_url=api_url, limit=limit)


def make_store(cfg) -> SnapshotStore:
    """The store the configuration asks for (config.Config; SESSION_STORE already validated)."""
    return create_store(
        heroku_api_key=cfg.heroku_api_key,
        heroku_app_name=cfg.heroku_app_name,
        file_path=cfg.snapshot_file,
        session_value=cfg.session_value,
        kind=cfg.session_store,
        api_url=cfg.heroku_api_url,
        limit=cfg.config_vars_limit,
    )
