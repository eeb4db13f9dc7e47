"""A fake Heroku Platform API (the config-vars part), as a real HTTP server on loopback.

It follows the documented behaviour the bot relies on:
* `GET` / `PATCH /apps/{app}/config-vars`, answering the app's full set of vars as JSON;
  a PATCH value of `null` removes that var;
* `Accept: application/vnd.heroku+json; version=3` is required (406 `not_acceptable` without);
* `Authorization: Bearer <token>` is checked (401 `unauthorized`), and so are the token's scopes:
  reading needs `read-protected` (or `global`), writing `write-protected` (or `global`) (403 `forbidden`);
* unknown apps answer 404 `not_found`;
* all vars of an app share one size limit, keys and values together, in bytes (422 `invalid_params`);
* every PATCH that changes something is one release (a new version); `on_release(vars)` is then
  called in its own thread *after* the response was sent, as Heroku restarts the dyno after answering;
* errors have Heroku's shape `{"id": ..., "message": ...}`; message texts are ours.

Test controls: `fail_next(status, count, retry_after=...)` answers the next requests with an
error, `hang_next(count, seconds)` holds requests past a client's timeout. Every request to the
API is recorded (method, path, headers with the Authorization value hidden, parsed body, status,
monotonic time) for assertions.

Library use::

    with FakeHeroku(app_name="my-app", token="t0k", vars={"OTHER": "x"}) as heroku:
        store = HerokuConfigVarStore("my-app", "t0k", api_url=heroku.url)
        ...
        assert heroku.release_count == 1

As a process (for end-to-end harnesses): `python -m tests.support.fake_heroku --app my-app --token t0k`
prints `FAKE_HEROKU_URL=http://127.0.0.1:PORT` and serves until SIGTERM/SIGINT. The same controls
are then reachable over HTTP: `GET /__fake__/state`, `POST /__fake__/fail` (JSON: status, count,
retry_after, error_id, message, method), `POST /__fake__/hang` (count, seconds, method), `POST /__fake__/vars`
(app, vars: preset without a release).
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

HEROKU_ACCEPT = "application/vnd.heroku+json; version=3"
DEFAULT_LIMIT = 65536
DEFAULT_HANG_SECONDS = 30.0

_ERROR_IDS = {400: "bad_request", 401: "unauthorized", 402: "delinquent", 403: "forbidden",
              404: "not_found", 406: "not_acceptable", 422: "invalid_params", 429: "rate_limit",
              500: "internal_server_error", 502: "bad_gateway", 503: "service_unavailable",
              504: "gateway_timeout"}
_ERROR_MESSAGES = {
    401: "Invalid credentials provided.",
    402: "Your account is delinquent.",
    403: "You do not have access to the app.",
    404: "Couldn't find that app.",
    429: "Your account reached the API rate limit. Please wait a few minutes before making new requests.",
    500: "Internal server error.",
    502: "Bad gateway.",
    503: "The API is temporarily unavailable.",
    504: "Gateway timeout.",
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict  # the Authorization value is replaced by "<hidden>"
    body: Any  # parsed JSON body, or None
    status: int  # what the fake answered; 0 while the request is still held by hang_next()
    at: float  # time.monotonic() when the request arrived
    token_ok: bool


@dataclass(frozen=True)
class Release:
    version: int
    app: str
    changed: dict  # the PATCH body that made this release (None = removed)
    vars: dict  # all vars after the release


@dataclass
class _Failure:
    status: int
    retry_after: float | str | None = None
    error_id: str | None = None
    message: str | None = None
    method: str | None = None  # None: any request


@dataclass
class _Hang:
    seconds: float
    method: str | None = None


@dataclass
class _App:
    vars: dict = field(default_factory=dict)
    version: int = 1


def config_vars_size(vars_: dict) -> int:
    """What Heroku's limit measures: every key and value together, in bytes."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in vars_.items())


def _take(faults: list, method: str):
    for index, fault in enumerate(faults):
        if fault.method in (None, method):
            return faults.pop(index)
    return None


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # keep test output readable
        pass


class FakeHeroku:
    def __init__(self, *, app_name: str = "fake-app", token: str = "fake-token",
                 vars: dict | None = None, limit: int = DEFAULT_LIMIT,
                 scopes: Iterable[str] = ("global",),
                 on_release: Callable[[dict], None] | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.app_name = app_name
        self.limit = limit
        self.on_release = on_release
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._apps: dict[str, _App] = {app_name: _App(dict(vars or {}))}
        self._tokens: dict[str, frozenset] = {token: frozenset(scopes)}
        self._failures: list[_Failure] = []
        self._hangs: list[float] = []
        self._requests: list[RecordedRequest] = []
        self._releases: list[Release] = []
        self._release_queue: queue.Queue[Release | None] = queue.Queue()
        self._release_thread: threading.Thread | None = None
        self.callback_errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._server = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "FakeHeroku":
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = make_server(self._host, self._port, self._wsgi, threaded=True,
                                   request_handler=_QuietHandler)
        server = self._server
        # A short poll interval makes stop() quick (shutdown waits for the serve loop to notice).
        self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05),
                                        name="fake-heroku", daemon=True)
        self._thread.start()
        self._release_thread = threading.Thread(target=self._deliver_releases,
                                                name="fake-heroku-releases", daemon=True)
        self._release_thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # releases hanging requests
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._release_queue.put(None)
        if self._release_thread is not None:
            self._release_thread.join(timeout=10)

    def __enter__(self) -> "FakeHeroku":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeHeroku is not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # -- controls ----------------------------------------------------------------------------

    def add_app(self, name: str, vars: dict | None = None) -> None:
        with self._lock:
            self._apps[name] = _App(dict(vars or {}))

    def add_token(self, token: str, scopes: Iterable[str] = ("global",)) -> None:
        with self._lock:
            self._tokens[token] = frozenset(scopes)

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def preset(self, vars: dict, app: str | None = None) -> None:
        """Replace an app's vars without a release (test setup)."""
        with self._lock:
            self._apps[app or self.app_name].vars = dict(vars)

    def fail_next(self, status: int, count: int = 1, *, retry_after: float | str | None = None,
                  error_id: str | None = None, message: str | None = None,
                  method: str | None = None) -> None:
        """Answer the next `count` API requests (of `method`, if given) with this error."""
        with self._lock:
            self._failures.extend(_Failure(status, retry_after, error_id, message, method)
                                  for _ in range(count))

    def hang_next(self, count: int = 1, seconds: float = DEFAULT_HANG_SECONDS, *,
                  method: str | None = None) -> None:
        """Hold the next requests (of `method`, if given) for `seconds` (or until stop()), then
        answer them normally: a client with a shorter timeout gives up, the change still lands."""
        with self._lock:
            self._hangs.extend(_Hang(seconds, method) for _ in range(count))

    def clear_faults(self) -> None:
        with self._lock:
            self._failures.clear()
            self._hangs.clear()

    # -- inspection --------------------------------------------------------------------------

    def vars_of(self, app: str | None = None) -> dict:
        with self._lock:
            return dict(self._apps[app or self.app_name].vars)

    @property
    def vars(self) -> dict:
        return self.vars_of()

    @property
    def releases(self) -> list[Release]:
        with self._lock:
            return list(self._releases)

    @property
    def release_count(self) -> int:
        with self._lock:
            return len(self._releases)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [replace(r) for r in self._requests]  # copies: later status updates stay out

    def requests_with(self, method: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def state(self) -> dict:
        with self._lock:
            return {
                "apps": {name: dict(app.vars) for name, app in self._apps.items()},
                "releases": [asdict(r) for r in self._releases],
                "requests": [asdict(r) for r in self._requests],
            }

    # -- the API -----------------------------------------------------------------------------

    @Request.application
    def _wsgi(self, request: Request) -> Response:
        if request.path.startswith("/__fake__/"):
            return self._control(request)
        arrived = time.monotonic()
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        with self._lock:
            scopes = self._tokens.get(token) if token is not None else None
            failure = _take(self._failures, request.method)
            hang = _take(self._hangs, request.method)
        body: Any = None
        raw = request.get_data(as_text=True)
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = "<not json>"

        # Recorded on arrival, so a test can count the attempts of a client that gave up waiting.
        headers = {k: ("<hidden>" if k.lower() == "authorization" else v)
                   for k, v in request.headers.items()}
        record = RecordedRequest(request.method, request.path, headers, body, 0, arrived,
                                 scopes is not None)
        with self._lock:
            self._requests.append(record)

        if hang is not None:
            self._stopping.wait(hang.seconds)
        if failure is not None:
            response = self._error(failure.status, failure.error_id, failure.message)
            if failure.retry_after is not None:
                response.headers["Retry-After"] = str(failure.retry_after)
        else:
            response, release = self._handle(request, scopes, body)
            if release is not None:
                response.call_on_close(lambda: self._released(release))
        with self._lock:
            record.status = response.status_code
        return response

    def _handle(self, request: Request, scopes: frozenset | None, body: Any):
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "apps" or parts[2] != "config-vars":
            return self._error(404, "not_found", "The requested API endpoint was not found."), None
        if HEROKU_ACCEPT not in request.headers.get("Accept", ""):
            return self._error(406, "not_acceptable",
                               f"Please set Accept: {HEROKU_ACCEPT} and try again."), None
        if scopes is None:
            return self._error(401), None
        with self._lock:
            app = self._apps.get(parts[1])
        if app is None:
            return self._error(404), None
        if request.method == "GET":
            if not scopes & {"global", "read-protected", "write-protected"}:
                return self._error(403, message="This action requires the read-protected scope."), None
            return self._json(self.vars_of(parts[1])), None
        if request.method != "PATCH":
            return self._error(405, "method_not_allowed", "Method not allowed."), None
        if not scopes & {"global", "write-protected"}:
            return self._error(403, message="This action requires the write-protected scope."), None
        if "application/json" not in request.headers.get("Content-Type", ""):
            return self._error(400, message="Expected a JSON body."), None
        if not isinstance(body, dict) or not all(
                isinstance(k, str) and k and (v is None or isinstance(v, str)) for k, v in body.items()):
            return self._error(422, message="Config vars must be an object of string values or null."), None
        with self._lock:
            new_vars = dict(app.vars)
            for key, value in body.items():
                if value is None:
                    new_vars.pop(key, None)
                else:
                    new_vars[key] = value
            size = config_vars_size(new_vars)
            if size > self.limit:
                return self._error(422, message=(
                    f"Config vars are too large: {size} bytes, the limit is {self.limit} bytes.")), None
            release = None
            if new_vars != app.vars:
                app.vars = new_vars
                app.version += 1
                release = Release(app.version, parts[1], dict(body), dict(new_vars))
                self._releases.append(release)
        return self._json(new_vars), release

    def _released(self, release: Release) -> None:
        self._release_queue.put(release)

    def _deliver_releases(self) -> None:
        # One thread, in order: an end-to-end harness restarting the app sees releases as Heroku
        # would roll them out, and a slow callback never holds up the API.
        while True:
            release = self._release_queue.get()
            if release is None:
                return
            if self.on_release is None:
                continue
            try:
                self.on_release(dict(release.vars))
            except BaseException as exc:  # recorded for the test to see
                self.callback_errors.append(exc)

    def _control(self, request: Request) -> Response:
        data = request.get_json(silent=True) or {}
        name = request.path[len("/__fake__/"):]
        if name == "state" and request.method == "GET":
            return self._json(self.state())
        if name == "fail" and request.method == "POST":
            self.fail_next(int(data["status"]), int(data.get("count", 1)),
                           retry_after=data.get("retry_after"), error_id=data.get("error_id"),
                           message=data.get("message"), method=data.get("method"))
            return self._json({"ok": True})
        if name == "hang" and request.method == "POST":
            self.hang_next(int(data.get("count", 1)), float(data.get("seconds", DEFAULT_HANG_SECONDS)),
                           method=data.get("method"))
            return self._json({"ok": True})
        if name == "vars" and request.method == "POST":
            self.preset(data.get("vars", {}), data.get("app"))
            return self._json({"ok": True})
        return self._error(404, "not_found", "Unknown control endpoint.")

    @staticmethod
    def _json(data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data), status=status, content_type="application/json",
                        headers={"RateLimit-Remaining": "4499"})

    def _error(self, status: int, error_id: str | None = None, message: str | None = None) -> Response:
        return self._json({"id": error_id or _ERROR_IDS.get(status, "error"),
                           "message": message or _ERROR_MESSAGES.get(status, "Request failed.")},
                          status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Heroku Platform API (config vars).")
    parser.add_argument("--app", default="fake-app")
    parser.add_argument("--token", default="fake-token")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    parser.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                        help="an initial config var (repeatable)")
    args = parser.parse_args(argv)
    initial = dict(item.split("=", 1) for item in args.var)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with FakeHeroku(app_name=args.app, token=args.token, vars=initial, limit=args.limit,
                    host=args.host, port=args.port) as heroku:
        print(f"FAKE_HEROKU_URL={heroku.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
