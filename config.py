"""Every setting of the bot, read once from the environment into one object.

The README's configuration table documents the same variables; the defaults are the ones that work on
a laptop with nothing set. A bad value stops the start with one line that names the variable and what
is wrong with it (`ConfigError`), instead of a traceback from deep inside the bot later on.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import secrets as _secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

#: The config var that holds the snapshot; also what the local store calls its file.
SESSION_VAR = "WHATSAPP_SESSION"

#: Heroku's documented limit for all config vars of one app together (keys and values): "Config var
#: data (the combination of all keys and values) cannot exceed 64kb for each app" (older pages: 32 KB).
CONFIG_VARS_LIMIT = 64 * 1024

#: The share of CONFIG_VARS_LIMIT a snapshot aims for (SNAPSHOT_SHARE, in percent): a quarter leaves
#: the rest to the owner's own config vars and carries at least PREKEY_FLOOR pre-keys of a fresh
#: pairing (snapshot/format.py); a larger share carries more peers' sessions (README "How the session fits").
SNAPSHOT_SHARE = 25

#: Seconds between two looks at the live database for a pre-key batch whatsmeow uploaded (prekeywatch.py).
PREKEY_CHECK_INTERVAL = 300.0

#: One save (snapshot + Platform API calls and retries) ends within this many seconds; the API
#: answers within it plus 2 s, under Heroku's 30 s router limit (SAVE_DEADLINE, at most 25).
SAVE_DEADLINE = 20.0

#: whatsmeow pings every 20-30 s and waits 10 s for each answer (keepalive.go). The first failed ping
#: is reported at most 30 + 10 = 40 s after the last answer, the second at least 2 x (20 + 10) = 60 s
#: after it. Giving up in between means one lost ping never drops a healthy connection, and the second
#: always drops a dead one: within about a minute instead of whatsmeow's own 3 minutes.
KEEPALIVE_GIVE_UP = 50.0

#: How long WhatsApp may stay out of reach (never connected since the start, or lost and not back)
#: before the owner gets an `unreachable` event: longer than a normal reconnect, or a daily restart's
#: login, so that a blip is not news; short enough that a real outage is.
UNREACHABLE_GRACE = 60.0

#: Request threads of the one gunicorn worker (gunicorn.conf.py). Requests waiting for a running save
#: hold a thread each; at most SAVE_WAITERS of them wait (the others answer at once that a save is
#: running), so the other threads always stay free for the health check and everything else.
REQUEST_THREADS = 16
SAVE_WAITERS = 10

#: Seconds a request's line and headers may take to arrive; a connection slower than that is answered
#: 408 and closed without ever holding a request thread (request_arrival.py). A real client sends its
#: headers in one packet; nginx waits 60 s (client_header_timeout), which 16 threads cannot afford.
REQUEST_ARRIVAL_TIMEOUT = 10.0
#: A request line and headers larger than this are answered 431. The API needs a few hundred bytes;
#: the bound also caps what connections still arriving hold (gunicorn's worker_connections, 1,000,
#: of them at most: 32 MB).
MAX_REQUEST_HEAD_BYTES = 32 * 1024

#: The Platform API's base URL (HEROKU_API_URL points the bot at a stand-in, as the tests do).
HEROKU_API_URL = "https://api.heroku.com"

STORE_KINDS = ("heroku", "file", "postgres")

#: Incoming media GET /api/media/<id> can fetch: the keys (never the files) of the last this many media
#: messages, each a few hundred bytes, so the default costs well under 1 MB of the dyno's 512 MB.
MEDIA_CACHE_ENTRIES = 1000
#: ... received at most this many seconds ago. A dyno restarts at least once a day and the cache starts
#: empty, so a day is what it can hold anyway; a shorter age forgets sooner.
MEDIA_CACHE_SECONDS = 86400.0
#: One download from WhatsApp's media servers (and its checks) ends within this many seconds, before
#: Heroku's router gives up on the request at 30 s without an answer.
MEDIA_DOWNLOAD_DEADLINE = 25.0
#: The text REJECT_CALLS_MESSAGE may send back to a caller (a message, not a document).
MAX_CALL_REPLY_CHARS = 4096

#: An API_KEY shorter than this starts with a warning (it still works).
MIN_API_KEY_CHARS = 16

#: Sends and chat actions per minute (SEND_RATE_LIMIT) before the API answers 429. WhatsApp bans numbers
#: that send too much, too fast; a person typing and tapping by hand stays well under one every two
#: seconds over a whole minute, so this only stops a loop (a bug in the owner's code) in its first minute.
SEND_RATE_LIMIT = 30


class ConfigError(ValueError):
    """A setting is missing, malformed or contradicts another; the message names the variable."""


@dataclass(frozen=True)
class Config:
    port: int = 8000
    session_dir: Path = Path("session")
    session_value: str | None = field(default=None, repr=False)  # WHATSAPP_SESSION at boot
    api_key: str | None = field(default=None, repr=False)
    heroku_api_key: str | None = field(default=None, repr=False)
    heroku_app_name: str | None = None
    heroku_api_url: str = HEROKU_API_URL
    session_store: str = "file"
    database_url: str | None = field(default=None, repr=False)
    pair_phone: str | None = field(default=None, repr=False)
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_queue_size: int = 1000  # events kept while the webhook is down (oldest dropped first)
    webhook_attempts: int = 10  # tries per event (logged_out: until it is delivered)
    webhook_retry_delay: float = 1.0  # first wait between tries; doubles up to 60 s
    config_vars_limit: int = CONFIG_VARS_LIMIT
    snapshot_share: int = SNAPSHOT_SHARE  # percent of config_vars_limit a snapshot aims for
    prekey_check_interval: float = PREKEY_CHECK_INTERVAL
    session_save_delay: float = 5.0
    save_deadline: float = SAVE_DEADLINE
    max_upload_bytes: int = 16 * 1024 * 1024
    max_connects_per_worker: int | None = None  # None: chosen by store (whatsapp.DEFAULT_MAX_CONNECTS)
    reconnect_delay_min: float = 1.0  # first backoff delay (s); doubles per failed attempt
    reconnect_delay_max: float = 60.0  # cap of the backoff delay (s)
    keepalive_give_up: float = KEEPALIVE_GIVE_UP
    send_rate_limit: int = SEND_RATE_LIMIT  # sends + chat actions per minute; 0: no limit
    unreachable_grace: float = UNREACHABLE_GRACE  # seconds out of reach before the `unreachable` event
    reconnect_probe: bool = True  # check that WhatsApp answers before handing a connect to neonize
    media_cache_entries: int = MEDIA_CACHE_ENTRIES
    media_cache_seconds: float = MEDIA_CACHE_SECONDS
    reject_calls: bool = False  # decline every call offered to the number (a bot cannot answer one)
    reject_calls_message: str | None = None  # then text the caller this
    log_level: str = "INFO"
    dyno: str | None = None  # DYNO, which Heroku sets on every dyno ("web.1"): tells Heroku from a laptop
    generated_key_file: Path | None = None  # set by with_local_api_key(): where the generated API key is
    # Test seam: "module:callable" that builds the WhatsApp client instead of neonize's NewClient.
    # The end-to-end tests use it to drive a scripted client inside a real gunicorn worker.
    client_factory: str | None = None

    @property
    def on_heroku(self) -> bool:
        return bool(self.dyno)

    @property
    def snapshot_file(self) -> Path:
        """Where the local store keeps the snapshot: a file next to the session directory."""
        directory = self.session_dir.resolve()
        return directory.with_name(directory.name + ".snapshot")

    @property
    def api_key_file(self) -> Path:
        """Where a local run without API_KEY keeps the key it generated: next to the session directory."""
        directory = self.session_dir.resolve()
        return directory.with_name(directory.name + ".api-key")

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line (the log filter masks them)."""
        values = [self.api_key, self.heroku_api_key, self.session_value, self.webhook_secret]
        if self.database_url:
            values.append(self.database_url)
            password = urlsplit(self.database_url).password
            if password:
                values.append(password)
        return [v for v in values if v]

    def warnings(self) -> list[str]:
        """Settings that work but are risky or lose something; logged once at start."""
        found = []
        if self.api_key and len(self.api_key) < MIN_API_KEY_CHARS:
            found.append(
                f"API_KEY has {len(self.api_key)} characters, fewer than {MIN_API_KEY_CHARS}: anyone who guesses "
                "it can send messages as this WhatsApp number, read its QR code and wipe its session; "
                "use a random one (openssl rand -hex 24)"
            )
        if self.send_rate_limit == 0:
            found.append(
                "SEND_RATE_LIMIT=0: sends are not paced; a loop in the code calling the API can send "
                "thousands of messages a minute, and WhatsApp bans numbers that send too much, too fast"
            )
        if self.on_heroku and self.session_store == "file":
            found.append(
                "the session is kept in a file on the dyno's disk, which Heroku wipes at every restart (at "
                "least daily): set HEROKU_API_KEY (with HEROKU_APP_NAME) to keep it in a config var, or "
                "attach Heroku Postgres"
            )
        return found

    def features(self) -> str:
        """One log line saying what is switched on, without any secret value."""
        parts = [
            f"store={self.session_store}",
            f"session_dir={self.session_dir}",
            "api_key=" + (
                f"generated (in {self.generated_key_file})" if self.generated_key_file
                else "set" if self.api_key else "NOT SET (protected endpoints refuse)"
            ),
            f"webhook={'on' if self.webhook_url else 'off'}",
            f"webhook_signing={'on' if self.webhook_secret else 'off'}",
            f"pair_phone={'set' if self.pair_phone else 'off'}",
            f"snapshot_at_boot={'yes' if self.session_value else 'no'}",
            f"reject_calls={'with message' if self.reject_calls_message else 'on' if self.reject_calls else 'off'}",
        ]
        if self.session_store == "heroku":
            parts.append(f"heroku_app={self.heroku_app_name}")
        if self.client_factory:
            parts.append(f"client_factory={self.client_factory}")
        return " ".join(parts)


def _text(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value, with surrounding whitespace removed; empty counts as unset."""
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _integer(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, high: float) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value <= high:
        raise ConfigError(f"{name} must be between 0 and {high:g} seconds, got {raw}")
    return value


def _positive_seconds(env: Mapping[str, str], name: str, default: float, *, high: float) -> float:
    value = _seconds(env, name, default, high=high)
    if value <= 0:
        raise ConfigError(f"{name} must be above 0 seconds, got {value:g}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (_text(env, name) or ("1" if default else "0")).lower()
    if raw not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")
    return raw in ("1", "true", "yes", "on")


def _http_url(name: str, raw: str | None, *, allow_http: bool = True) -> str | None:
    if raw is None:
        return None
    parts = urlsplit(raw)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        want = " or ".join(f"{s}://host/..." for s in schemes)
        # Only the scheme and host are echoed: a webhook URL may carry a token in its query.
        shown = f"{parts.scheme}://{parts.hostname}" if parts.scheme else "a value without a scheme"
        raise ConfigError(f"{name} must be an absolute URL like {want}, got {shown}")
    return raw


def _check_database_url(url: str) -> None:
    """Refuse at start what the session store would refuse later (with a traceback, in the worker)."""
    if url.partition("://")[0].lower() not in ("postgres", "postgresql"):
        raise ConfigError("DATABASE_URL must be a PostgreSQL URL (postgres://user:password@host:port/db)")
    from pgsession import DatabaseUrlError, neonize_database_url  # stdlib only at import time

    try:
        neonize_database_url(url)
    except DatabaseUrlError as exc:  # its text shows the URL with the password as ***
        raise ConfigError(str(exc)) from None


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate every setting; raises ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ

    heroku_api_key = _text(env, "HEROKU_API_KEY")
    # Also set by Heroku itself with runtime dyno metadata (heroku labs:enable runtime-dyno-metadata):
    # alone it keeps the session in a local file (config.warnings() says what that means on Heroku).
    heroku_app_name = _text(env, "HEROKU_APP_NAME")
    if heroku_api_key and not heroku_app_name:
        raise ConfigError(
            "HEROKU_API_KEY is set but HEROKU_APP_NAME is not: set HEROKU_APP_NAME to the app's name (or "
            "enable `heroku labs:enable runtime-dyno-metadata`, which sets it), or unset HEROKU_API_KEY to "
            "keep the session in a local file"
        )

    api_key = _text(env, "API_KEY")
    if api_key and not all(32 <= ord(ch) < 127 for ch in api_key):
        # HTTP headers carry printable ASCII: such a key could never be sent as Bearer or X-Api-Key.
        raise ConfigError("API_KEY contains non-ASCII or control characters, which no HTTP header can carry: "
                          "use a key of letters and digits (openssl rand -hex 24)")

    database_url = _text(env, "DATABASE_URL")
    if database_url:
        _check_database_url(database_url)

    store = (_text(env, "SESSION_STORE") or "").lower()
    if not store:
        # Postgres when the add-on is attached (it sets DATABASE_URL): the live session then needs no
        # snapshot at all. Otherwise the config var when the credentials are there, else a local file.
        store = "postgres" if database_url else ("heroku" if heroku_api_key else "file")
    if store not in STORE_KINDS:
        raise ConfigError(f"SESSION_STORE must be one of {', '.join(STORE_KINDS)}, got {store!r}")
    if store == "heroku" and not heroku_api_key:
        raise ConfigError("SESSION_STORE=heroku needs HEROKU_API_KEY and HEROKU_APP_NAME")
    if store == "postgres" and not database_url:
        raise ConfigError("SESSION_STORE=postgres needs DATABASE_URL (heroku addons:create heroku-postgresql)")

    webhook_url = _http_url("WEBHOOK_URL", _text(env, "WEBHOOK_URL"))
    webhook_secret = _text(env, "WEBHOOK_SECRET")
    if webhook_secret and not webhook_url:
        raise ConfigError("WEBHOOK_SECRET is set but WEBHOOK_URL is not: set the URL the messages go to")

    pair_phone = _text(env, "PAIR_PHONE")
    if pair_phone:
        digits = pair_phone.lstrip("+").replace(" ", "").replace("-", "")
        if not digits.isdigit() or not 7 <= len(digits) <= 15:
            raise ConfigError("PAIR_PHONE must be a phone number in international form, like +15551234567")

    log_level = (_text(env, "LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    reconnect_delay_min = _seconds(env, "RECONNECT_DELAY_MIN", 1.0, high=3600)
    reconnect_delay_max = _seconds(env, "RECONNECT_DELAY_MAX", max(60.0, reconnect_delay_min), high=86400)
    if reconnect_delay_min <= 0 or reconnect_delay_max < reconnect_delay_min:
        raise ConfigError(
            "RECONNECT_DELAY_MIN must be above 0 and RECONNECT_DELAY_MAX at least as large, "
            f"got {reconnect_delay_min:g} and {reconnect_delay_max:g}"
        )
    probe = _flag(env, "RECONNECT_PROBE", True)
    reject_calls = _flag(env, "REJECT_CALLS", False)
    reject_calls_message = _text(env, "REJECT_CALLS_MESSAGE")
    if reject_calls_message and not reject_calls:
        raise ConfigError("REJECT_CALLS_MESSAGE is set but REJECT_CALLS is not: set REJECT_CALLS=1 to decline "
                          "calls and answer with that text")
    if reject_calls_message and len(reject_calls_message) > MAX_CALL_REPLY_CHARS:
        raise ConfigError(f"REJECT_CALLS_MESSAGE has {len(reject_calls_message)} characters, more than "
                          f"{MAX_CALL_REPLY_CHARS}")

    return Config(
        port=_integer(env, "PORT", 8000, low=1, high=65535),
        session_dir=Path(_text(env, "SESSION_DIR") or "session"),
        session_value=_text(env, SESSION_VAR),
        api_key=api_key,
        heroku_api_key=heroku_api_key,
        heroku_app_name=heroku_app_name,
        heroku_api_url=(
            _http_url("HEROKU_API_URL", _text(env, "HEROKU_API_URL")) or HEROKU_API_URL
        ).rstrip("/"),
        session_store=store,
        database_url=database_url,
        pair_phone=pair_phone,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        webhook_queue_size=_integer(env, "WEBHOOK_QUEUE_SIZE", 1000, low=10, high=100_000),
        webhook_attempts=_integer(env, "WEBHOOK_ATTEMPTS", 10, low=1, high=1000),
        webhook_retry_delay=_positive_seconds(env, "WEBHOOK_RETRY_DELAY", 1.0, high=60),
        config_vars_limit=_integer(
            env, "CONFIG_VARS_LIMIT", CONFIG_VARS_LIMIT, low=1024, high=16 * 1024 * 1024
        ),
        snapshot_share=_integer(env, "SNAPSHOT_SHARE", SNAPSHOT_SHARE, low=1, high=100),
        prekey_check_interval=_positive_seconds(env, "PREKEY_CHECK_INTERVAL", PREKEY_CHECK_INTERVAL, high=86400),
        session_save_delay=_seconds(env, "SESSION_SAVE_DELAY", 5.0, high=600),
        save_deadline=_seconds(env, "SAVE_DEADLINE", SAVE_DEADLINE, high=25),
        max_upload_bytes=_integer(env, "MAX_UPLOAD_BYTES", 16 * 1024 * 1024, low=1024, high=100 * 1024 * 1024),
        max_connects_per_worker=(
            _integer(env, "MAX_CONNECTS_PER_WORKER", 0, low=1, high=1_000_000)
            if _text(env, "MAX_CONNECTS_PER_WORKER") else None
        ),
        reconnect_delay_min=reconnect_delay_min,
        reconnect_delay_max=reconnect_delay_max,
        reconnect_probe=probe,
        keepalive_give_up=_seconds(env, "KEEPALIVE_GIVE_UP", KEEPALIVE_GIVE_UP, high=3600),
        send_rate_limit=_integer(env, "SEND_RATE_LIMIT", SEND_RATE_LIMIT, low=0, high=10_000),
        unreachable_grace=_positive_seconds(env, "UNREACHABLE_GRACE", UNREACHABLE_GRACE, high=86400),
        media_cache_entries=_integer(env, "MEDIA_CACHE_ENTRIES", MEDIA_CACHE_ENTRIES, low=0, high=100_000),
        media_cache_seconds=_positive_seconds(env, "MEDIA_CACHE_SECONDS", MEDIA_CACHE_SECONDS, high=30 * 86400),
        reject_calls=reject_calls,
        reject_calls_message=reject_calls_message,
        log_level=log_level,
        dyno=_text(env, "DYNO"),
        client_factory=_text(env, "WHATSAPP_CLIENT_FACTORY"),
    )


def with_local_api_key(cfg: Config) -> Config:
    """A local run without API_KEY gets a random key, so /qr and the API work as the README says.

    The key is kept in `cfg.api_key_file` (mode 0600, reused by the next start, so a browser's saved
    login keeps working); the log says where, never the key. On Heroku (DYNO set) nothing is generated:
    there API_KEY is a config var, and without it the protected endpoints answer 503 saying so.

    A key file that is a link, not a regular file, not ours, or open to other users is refused with a
    ConfigError (the start stops, as ssh does with a private key others may read): its key may be known
    to someone else, and replacing it silently would hide that. The link is never followed.
    """
    if cfg.api_key or cfg.on_heroku:
        return cfg
    path = cfg.api_key_file
    try:
        key = _read_key_file(path)
    except FileNotFoundError:
        key = ""
    except OSError:
        return cfg
    if len(key) < MIN_API_KEY_CHARS or not all(32 < ord(ch) < 127 for ch in key):
        key = _secrets.token_urlsafe(24)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            # O_EXCL: never through a link someone put there in the meantime.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(key + "\n")
        except OSError:
            return cfg  # a read-only directory: the endpoints answer 503 with how to set API_KEY
    return dataclasses.replace(cfg, api_key=key, generated_key_file=path)


#: A generated key is 32 characters; a key file longer than this is not one of ours.
MAX_KEY_FILE_BYTES = 4096


def _read_key_file(path: Path) -> str:
    """The key in `path`, checked on the open file itself (no race between a check and the read).
    ConfigError for a file the bot must not trust; OSError (FileNotFoundError: none yet) otherwise."""
    from textsafe import printable

    shown = printable(path)
    # O_NOFOLLOW: a symlink fails to open (ELOOP) instead of being followed; O_NONBLOCK: a FIFO put
    # there cannot hang the start.
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{shown} is a symbolic link; the bot reads its API key only from a regular file "
                              f"of its own: delete the link (a new key is generated) or set API_KEY") from None
        raise
    try:
        facts = os.fstat(descriptor)
        if not stat.S_ISREG(facts.st_mode):
            raise ConfigError(f"{shown} is not a regular file: delete it (a new key is generated) or set API_KEY")
        if facts.st_uid != os.geteuid():
            raise ConfigError(f"{shown} belongs to another user (uid {facts.st_uid}), who may know or change its "
                              "key: delete it (a new key is generated) or set API_KEY")
        if facts.st_mode & 0o077:
            mode = stat.S_IMODE(facts.st_mode)
            raise ConfigError(f"{shown} may be read or changed by other users (mode {mode:04o}): "
                              f"`chmod 600 {shown}` if no one else could have read it, else delete it "
                              "(a new key is generated)")
        return os.read(descriptor, MAX_KEY_FILE_BYTES).decode("ascii", errors="replace").strip()
    finally:
        os.close(descriptor)
