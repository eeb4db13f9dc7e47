"""Where session snapshots live.

Two stores behind one small interface (`SnapshotStore`):

* `HerokuConfigVarStore` keeps the snapshot in a Heroku config var, through the Platform API client
  in heroku_api.py. Every change of a config var creates a release and restarts the dyno, so a save
  is a rare, deliberate event: it never writes a value equal to the one the config var holds (it
  compares with the value it has just read, forced or not), checks the size budget shared by all
  config vars first, and logs the coming restart before it writes.
* `LocalFileStore` keeps it in a file (the default when no Heroku credentials are set), written
  atomically with mode 0600, and applies the same budget so a laptop run refuses what Heroku
  would refuse.

No error text and no log line ever contains the API token or the snapshot itself.
"""

from __future__ import annotations

import abc
import errno
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import requests

from clock import iso_now
from config import CONFIG_VARS_LIMIT, HEROKU_API_URL, SESSION_VAR, SNAPSHOT_SHARE
from snapshot.format import same_snapshot
from fsutil import fsync_path
from heroku_api import (TOKEN_HINT, AppNotFound, AuthenticationFailed,  # noqa: F401 - the store's errors
                        ConfigVarsClient, PermissionDenied, PlatformConnectionError, PlatformTimeout,
                        PlatformUnavailable, RateLimited, StoreConfigError, StoreError, ValueRejected)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Room for the snapshot in the config vars' shared size limit (all sizes in bytes).

    `ceiling` is a hard limit: a larger value would be refused. `target` is what a snapshot
    should aim for, `share` percent of the limit (SNAPSHOT_SHARE, a quarter by default), so the owner
    can still add config vars of their own.
    """

    limit: int
    used_by_others: int
    ceiling: int
    target: int
    stored_size: int = 0  # size of the value this key holds now (0 when absent)

    @classmethod
    def compute(cls, limit: int, used_by_others: int, key: str, stored_size: int = 0,
                share: int = SNAPSHOT_SHARE) -> "Budget":
        ceiling = max(0, limit - used_by_others - _size(key))
        target = max(0, min(ceiling, limit * share // 100 - _size(key)))
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
# Errors of the stores themselves (the Platform API's are in heroku_api.py)
# --------------------------------------------------------------------------------------------


class BudgetExceeded(StoreError):
    summary = "the session is larger than the room the config vars leave"
    hint = (
        "remove config vars you no longer need (`heroku config`), or let the snapshot builder "
        "leave out optional data so the snapshot fits"
    )


class LocalStoreError(StoreError):
    summary = "the local snapshot file could not be read or written"
    hint = "check that the snapshot file's directory exists, is writable and the disk is not full"


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


def _size(text: str) -> int:
    # Config vars are measured in bytes; snapshots are base64 (ASCII) so this equals len(),
    # but other vars may hold non-ASCII text and bytes are the conservative measure.
    return len(text.encode("utf-8"))


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

    def __init__(self, *, key: str = SESSION_VAR, limit: int = CONFIG_VARS_LIMIT, share: int = SNAPSHOT_SHARE):
        if not key:
            raise ValueError("key must not be empty")
        if limit <= 0:
            raise ValueError("limit must be positive")
        self.key = key
        self.limit = int(limit)
        self.share = int(share)
        self._lock = threading.RLock()
        self._last_saved_at: str | None = None
        self._last_error: StoreError | None = None

    @abc.abstractmethod
    def load(self) -> str | None:
        """The stored snapshot, or None when there is none."""

    @abc.abstractmethod
    def save(self, text: str, *, force: bool = False, budget: Budget | None = None,
             deadline: float | None = None) -> SaveResult:
        """Store `text`; never writes a value equal to the stored one. Without `force` the value known
        in memory decides that; with it, the value read from the store itself.

        `budget`: one the caller just fetched (to pick the snapshot's tier), so it is not fetched
        a second time for the same save. `deadline`: a time.monotonic() value the save ends by."""

    @abc.abstractmethod
    def clear(self, *, deadline: float | None = None) -> bool:
        """Remove the snapshot; returns whether something was removed."""

    @abc.abstractmethod
    def budget(self, *, deadline: float | None = None) -> Budget:
        """How much room the snapshot has (for a config var: also reads the value it holds now)."""

    @abc.abstractmethod
    def _where(self) -> dict:
        """Where the snapshot lives, for describe() (never a secret)."""

    @abc.abstractmethod
    def _known_value(self) -> str | None:
        """The stored value as far as known without network calls."""

    def describe(self) -> dict:
        value = self._known_value()
        error = self._last_error
        return {
            "kind": self.kind,
            **self._where(),
            "key": self.key,
            "limit": self.limit,
            "has_value": value is not None,
            "value_size": _size(value) if value is not None else 0,
            "last_saved_at": self._last_saved_at,
            "last_error": error.as_dict() if error else None,
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


class HerokuConfigVarStore(SnapshotStore):
    """The snapshot in a config var of a Heroku app, through the Platform API v3.

    `deadline` (a time.monotonic() value) bounds a whole save or clear, its retries included."""

    kind = "heroku"

    def __init__(self, app_name: str, api_key: str, *, initial_value: str | None = None,
                 api_url: str = HEROKU_API_URL, limit: int = CONFIG_VARS_LIMIT,
                 timeout: float | tuple[float, float] = (5, 15), max_retries: int = 3,
                 session: requests.Session | None = None, key: str = SESSION_VAR,
                 backoff_factor: float = 0.5, give_up_after: float = 30.0, share: int = SNAPSHOT_SHARE):
        super().__init__(key=key, limit=limit, share=share)
        app_name = (app_name or "").strip()
        token = (api_key or "").strip()  # a pasted token often carries a trailing newline
        if not app_name:
            raise StoreConfigError("HEROKU_APP_NAME is empty", "set HEROKU_APP_NAME to your app's name")
        if not token:
            raise StoreConfigError("HEROKU_API_KEY is empty", TOKEN_HINT)
        if any(ch.isspace() or ord(ch) < 32 for ch in token):
            # requests would put such a header value into its exception text; refuse it here.
            raise AuthenticationFailed("HEROKU_API_KEY contains spaces or line breaks",
                                       f"copy the token again without them; {TOKEN_HINT}")
        self.app_name = app_name
        self.api = ConfigVarsClient(app_name, token, api_url=api_url, timeout=timeout,
                                    max_retries=max_retries, backoff_factor=backoff_factor,
                                    give_up_after=give_up_after, session=session)
        self.api_url = self.api.api_url
        self._value: str | None = initial_value if initial_value else None
        self._pending: str | None = None  # the value being written, kept out of error texts
        self._restart_expected = False

    def __repr__(self) -> str:
        return f"HerokuConfigVarStore(app_name={self.app_name!r}, api_url={self.api_url!r}, key={self.key!r})"

    # -- interface ---------------------------------------------------------------------------

    def load(self) -> str | None:
        # The dyno was (re)started with the current config vars in its environment, so the
        # value given at construction is the stored one; booting never calls the API.
        return self._value

    def budget(self, *, deadline: float | None = None) -> Budget:
        with self._lock:
            return self._budget_from(self._call(self.api.read, deadline=deadline))

    def save(self, text: str, *, force: bool = False, budget: Budget | None = None,
             deadline: float | None = None) -> SaveResult:
        text = _check_snapshot_text(text)
        with self._lock:
            if same_snapshot(text, self._value) and not force:
                return SaveResult(False, _size(text), reason="unchanged")
            self._pending = text
            try:
                return self._save_changed(text, budget=budget, deadline=deadline)
            finally:
                self._pending = None

    def _save_changed(self, text: str, *, budget: Budget | None, deadline: float | None) -> SaveResult:
        """save() of a value that differs from the known one (or forced); runs with the lock held."""
        if budget is None:
            budget = self.budget(deadline=deadline)  # also refreshes the known value from the platform
        # Compared with what the config var holds now (read just above, or by the caller's budget
        # GET), forced or not: writing an equal value would only restart the dyno for nothing.
        if same_snapshot(text, self._value):
            return SaveResult(False, _size(text), budget=budget, reason="unchanged")
        try:
            self._refuse_over_budget(text, budget)
        except StoreError as exc:
            raise self._failed(exc)
        log.warning("Saving %s (%d bytes) to Heroku app %s: Heroku will create a release and "
                    "restart the dyno", self.key, _size(text), self.app_name)
        vars_ = self._call(self.api.patch, {self.key: text}, deadline=deadline)
        if vars_.get(self.key) != text:
            raise self._failed(StoreError(
                f"Heroku answered the write to app {self.app_name!r} without the new {self.key}",
                "try again; if it persists, check `heroku config` and `heroku releases`"))
        self._value = text
        self._restart_expected = True
        self._last_saved_at = iso_now()
        self._last_error = None
        return SaveResult(True, _size(text), restart_expected=True, budget=budget,
                          saved_at=self._last_saved_at)

    def clear(self, *, deadline: float | None = None) -> bool:
        with self._lock:
            if self._value is None:
                return False
            self.budget(deadline=deadline)  # refreshes the known value: someone may have removed it already
            if self._value is None:
                return False
            log.warning("Removing %s from Heroku app %s: Heroku will create a release and restart "
                        "the dyno", self.key, self.app_name)
            vars_ = self._call(self.api.patch, {self.key: None}, deadline=deadline)
            if self.key in vars_:
                raise self._failed(StoreError(
                    f"Heroku answered the removal from app {self.app_name!r} but still lists {self.key}",
                    f"try again; if it persists, run `heroku config:unset {self.key}`"))
            self._value = None
            self._restart_expected = True
            self._last_saved_at = iso_now()
            self._last_error = None
            return True

    def close(self) -> None:
        """Release pooled connections (the store is not used afterwards)."""
        self.api.close()

    def _where(self) -> dict:
        return {"app_name": self.app_name, "api_url": self.api_url,
                "restart_expected": self._restart_expected}

    def _known_value(self) -> str | None:
        return self._value

    def _call(self, method, *args, deadline: float | None) -> dict:
        """One Platform API call; its error (secrets masked) is remembered for describe()."""
        try:
            vars_ = method(*args, deadline=deadline, secrets=(self._value, self._pending))
        except StoreError as exc:
            raise self._failed(exc) from None
        self._last_error = None
        return vars_

    def _budget_from(self, vars_: Mapping[str, Any]) -> Budget:
        current = vars_.get(self.key)
        self._value = current if isinstance(current, str) and current else None
        used = sum(_size(str(k)) + _size(str(v)) for k, v in vars_.items()
                   if k != self.key and v is not None)
        return Budget.compute(self.limit, used, self.key, _size(self._value or ""), self.share)


# --------------------------------------------------------------------------------------------
# Local file
# --------------------------------------------------------------------------------------------


class LocalFileStore(SnapshotStore):
    """The snapshot in a file: the default when the bot does not run with Heroku credentials.

    The budget is computed as if this were the app's only config var, so a snapshot that
    Heroku would refuse is refused here too."""

    kind = "file"

    def __init__(self, path: str | os.PathLike, *, limit: int = CONFIG_VARS_LIMIT, key: str = SESSION_VAR,
                 share: int = SNAPSHOT_SHARE):
        super().__init__(key=key, limit=limit, share=share)
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

    def budget(self, *, deadline: float | None = None) -> Budget:
        return Budget.compute(self.limit, 0, self.key, _size(self._cached or ""), self.share)

    def save(self, text: str, *, force: bool = False, budget: Budget | None = None,
             deadline: float | None = None) -> SaveResult:
        text = _check_snapshot_text(text)
        with self._lock:
            changed = not same_snapshot(text, self.load())  # the file itself: forced or not, an equal value is kept
            if not changed:
                return SaveResult(False, _size(text), reason="unchanged")
            budget = budget or self.budget()
            try:
                self._refuse_over_budget(text, budget)
                self._write_atomically(text)
            except StoreError as exc:
                raise self._failed(exc)
            self._cached = text
            self._last_saved_at = iso_now()
            self._last_error = None
            log.info("Saved %s (%d bytes) to %s", self.key, _size(text), self.path)
            return SaveResult(changed, _size(text), restart_expected=False, budget=budget,
                              saved_at=self._last_saved_at)

    def clear(self, *, deadline: float | None = None) -> bool:
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
            self._last_saved_at = iso_now()
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


def make_store(cfg) -> SnapshotStore:
    """The store the configuration asks for (config.Config, validated there: the one place that
    checks settings). `postgres` has no snapshot store: the session lives in the database."""
    if cfg.session_store == "heroku":
        return HerokuConfigVarStore(cfg.heroku_app_name, cfg.heroku_api_key, initial_value=cfg.session_value,
                                    api_url=cfg.heroku_api_url, limit=cfg.config_vars_limit,
                                    share=cfg.snapshot_share)
    return LocalFileStore(cfg.snapshot_file, limit=cfg.config_vars_limit, share=cfg.snapshot_share)
