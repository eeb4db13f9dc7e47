"""A throwaway PostgreSQL server on loopback, for tests that need a real one.

It uses the server binaries of the machine image (Debian's postgresql-15, or any
version found under /usr/lib/postgresql/*/bin, or PG_BINDIR). initdb and postgres
refuse to run as root, so when the tests run as root the server runs as the
`postgres` system user (runuser), in a temp dir that user owns. It listens on
127.0.0.1 only, on a free port, with its unix socket inside the temp dir, so it
never collides with a system server.

When openssl is there the server also speaks TLS with a self-signed certificate,
and one role (`SSL_USER`) is only let in over TLS - the way Heroku Postgres
behaves - so a test can prove that the URL the bot builds really uses TLS.

    server = PostgresServer()
    server.start()          # raises ServerUnavailable with the reason
    try:
        url = server.create_database("t1")
    finally:
        server.stop()       # pg_ctl stop -m fast, then the temp dir is removed
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from urllib.parse import quote

SSL_USER = "tlsonly"


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server could be started here; the message says why."""


def _find_bindir() -> str | None:
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates.append(os.path.dirname(shutil.which("pg_ctl") or ""))
    for bindir in candidates:
        if bindir and all(os.access(os.path.join(bindir, tool), os.X_OK)
                          for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_user() -> str:
    """Who runs the server when we are root: Debian's `postgres`, else `nobody`."""
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return "postgres"



class PostgresServer:
    def __init__(self, os_user: str | None = None):
        self.os_user = os_user or _server_user()
        self.password = secrets.token_urlsafe(12)  # the superuser's, and SSL_USER's
        self.superuser = "postgres"
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.ssl = False
        self.bindir: str | None = None
        self.base: str | None = None
        self._running = False

    # -- paths ---------------------------------------------------------------
    @property
    def datadir(self) -> str:
        return os.path.join(self.base, "data")

    @property
    def logfile(self) -> str:
        return os.path.join(self.base, "server.log")

    # -- running commands as the server's user -------------------------------
    def _as_server_user(self, argv: list[str]) -> list[str]:
        # Root may not run initdb/postgres; anyone else runs them as themselves.
        if os.geteuid() == 0:
            return ["runuser", "-u", self.os_user, "--", *argv]
        return argv

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self._as_server_user(argv), capture_output=True, text=True,
                              timeout=timeout, cwd=self.base)

    def _chown(self, path: str) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- life ----------------------------------------------------------------
    def start(self) -> None:
        self.bindir = _find_bindir()
        if self.bindir is None:
            raise ServerUnavailable("no initdb/pg_ctl/postgres found (install Debian's "
                                    "postgresql package or set PG_BINDIR)")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(self.os_user)
            except KeyError:
                raise ServerUnavailable(f"running as root and there is no '{self.os_user}' "
                                        "system user to run the server as") from None
        self.base = tempfile.mkdtemp(prefix="pgtest-")
        try:
            self._init_cluster()
            self._start_server()
            self._add_ssl_user()
        except BaseException:
            self.stop()
            raise

    def _init_cluster(self) -> None:
        self._chown(self.base)
        pwfile = os.path.join(self.base, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        self._chown(pwfile)
        done = self._run([os.path.join(self.bindir, "initdb"), "-D", self.datadir,
                          "-U", self.superuser, "--pwfile", pwfile, "-A", "scram-sha-256",
                          "-E", "UTF8", "--locale=C", "--no-sync"])
        os.unlink(pwfile)
        if done.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {(done.stderr or done.stdout).strip()[-800:]}")
        self.ssl = self._make_certificate()
        # Written whole (not appended) so only loopback TCP gets in, with a password;
        # SSL_USER is turned away without TLS, like Heroku turns away everyone.
        hba = ["local all all trust"]
        if self.ssl:
            hba.append(f"hostnossl all {SSL_USER} 127.0.0.1/32 reject")
        hba.append("host all all 127.0.0.1/32 scram-sha-256")
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("\n".join(hba) + "\n")

    def _make_certificate(self) -> bool:
        openssl = shutil.which("openssl")
        if openssl is None:
            return False
        crt, key = os.path.join(self.datadir, "server.crt"), os.path.join(self.datadir, "server.key")
        done = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                               "-subj", "/CN=127.0.0.1", "-days", "2",
                               "-keyout", key, "-out", crt],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            return False
        os.chmod(key, 0o600)
        self._chown(crt)
        self._chown(key)
        return True

    def _start_server(self) -> None:
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = _free_port()
            options = (f"-c listen_addresses={self.host} -p {self.port} "
                       f"-c unix_socket_directories={self.base} "
                       f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       f"-c ssl={'on' if self.ssl else 'off'}")
            done = self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir,
                              "-l", self.logfile, "-o", options, "-w", "-t", "60", "start"])
            if done.returncode == 0:
                self._running = True
                return
            last_error = (done.stderr or done.stdout).strip() + "\n" + self.log_tail()
        raise ServerUnavailable(f"pg_ctl start failed: {last_error[-1200:]}")

    def _add_ssl_user(self) -> None:
        if self.ssl:
            self.execute(f"CREATE ROLE {SSL_USER} LOGIN SUPERUSER PASSWORD '{self.password}'")

    def stop(self) -> None:
        try:
            if self._running:
                self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir,
                           "-m", "fast", "-w", "-t", "60", "stop"])
                self._running = False
        finally:
            if self.base and not self._running:
                shutil.rmtree(self.base, ignore_errors=True)
                self.base = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
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
