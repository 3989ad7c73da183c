"""Local peers for the alerting end-to-end tests: an HTTP receiver that records every request
and answers from a per-path script (statuses, Retry-After, slow or hanging answers), a
Prometheus scrape target whose metric the test flips, and an SMTP server (aiosmtpd, plain or
with STARTTLS on a throwaway self-signed certificate).

Everything listens on 127.0.0.1 on a free port. Nothing here is a pytest fixture."""

from __future__ import annotations

import json
import pathlib
import ssl
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from steward_testlib import clean_env, free_port


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass
class Request:
    """One request as the receiver saw it."""

    method: str
    path: str                 # without the query string
    query: str
    headers: dict             # names lower-cased
    body: bytes
    at: float                 # time.monotonic() when it arrived
    answered: Optional[int] = None   # the status it got (None while hanging / if never answered)

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:  # short, for assertion messages
        b = self.body[:300].decode(errors="replace")
        return f"<{self.method} {self.path} -> {self.answered} {b}>"


@dataclass
class Reply:
    """How to answer one request. `hang=True` answers only when the receiver is released
    (or after `delay` seconds if given), so a sender can be killed mid-request."""

    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False


OK = Reply()


class HttpReceiver:
    """Records every request; answers from the script of its path (one Reply per request,
    in order), then from the path's default (200 with an empty body unless set)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._received: list = []
        self._scripts: dict = {}
        self._defaults: dict = {}
        self._handlers: dict = {}
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path, _, query = self.path.partition("?")
                req = Request(self.command, path, query, {k.lower(): v for k, v in self.headers.items()},
                              body, time.monotonic())
                reply = outer._reply_for(req)
                with outer.cond:
                    outer._received.append(req)
                    outer.cond.notify_all()
                if reply.hang:
                    outer._release.wait(reply.delay or 120)
                elif reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, str(v))
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if reply.body:
                        self.wfile.write(reply.body)
                    req.answered = reply.status
                except OSError:
                    pass  # the sender went away (killed mid-request)
                self.close_connection = True

            do_POST = do_GET = do_PUT = do_HEAD = _serve

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="receiver", daemon=True)
        self.thread.start()

    # -- behaviour ---------------------------------------------------------------------------

    def script(self, path: str, *replies: Reply) -> None:
        """The next requests to `path` get these answers, in order (appended to what is left)."""
        with self.lock:
            self._scripts.setdefault(path, deque()).extend(replies)

    def default(self, path: str, reply: Reply) -> None:
        with self.lock:
            self._defaults[path] = reply

    def handle(self, path: str, fn: Callable[[Request], Reply]) -> None:
        """Answers every request to `path` with fn(request) (scripts still come first)."""
        with self.lock:
            self._handlers[path] = fn

    def release(self) -> None:
        """Lets every hanging answer go (and every later `hang` answer at once)."""
        self._release.set()

    def _reply_for(self, req: Request) -> Reply:
        with self.lock:
            q = self._scripts.get(req.path)
            if q:
                return q.popleft()
            fn = self._handlers.get(req.path)
            default = self._defaults.get(req.path, OK)
        return fn(req) if fn else default

    # -- what arrived ------------------------------------------------------------------------

    def requests(self, path: Optional[str] = None, method: Optional[str] = None) -> list:
        with self.lock:
            return [r for r in self._received
                    if (path is None or r.path == path) and (method is None or r.method == method)]

    def bodies(self, path: Optional[str] = None) -> list:
        """The JSON bodies of the POSTs to `path`, in arrival order."""
        return [r.json() for r in self.requests(path, "POST")]

    def wait(self, path: Optional[str], n: int = 1, timeout: float = 10.0, pred=None, what: str = "") -> list:
        """Waits until at least `n` requests to `path` (matching `pred(request)`) arrived;
        returns all of those."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [r for r in self._received
                       if (path is None or r.path == path) and (pred is None or pred(r))]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [r for r in self._received if path is None or r.path == path]
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {n} request(s) to {path} {what}: "
                        f"got {len(got)}; all to that path: {seen}")
                self.cond.wait(min(left, 0.2))

    def quiet(self, path: Optional[str], seconds: float, count: Optional[int] = None, pred=None) -> None:
        """Asserts no request (matching `pred`) beyond `count` (default: those already there)
        reaches `path` for `seconds`."""
        def matching():
            return [r for r in self.requests(path) if pred is None or pred(r)]

        before = len(matching()) if count is None else count
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            got = matching()
            assert len(got) <= before, f"unexpected request(s) to {path}: {got[before:]}"
            time.sleep(0.05)

    def settle(self, path: Optional[str], seconds: float = 1.0, timeout: float = 15.0) -> int:
        """Waits until no new request reached `path` for `seconds`; returns the count."""
        deadline = time.monotonic() + timeout
        n, since = len(self.requests(path)), time.monotonic()
        while time.monotonic() - since < seconds:
            if time.monotonic() > deadline:
                raise AssertionError(f"requests to {path} kept coming for {timeout}s: {self.requests(path)[-5:]}")
            time.sleep(0.05)
            m = len(self.requests(path))
            if m != n:
                n, since = m, time.monotonic()
        return n

    def close(self) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


class MetricsTarget(HttpReceiver):
    """A Prometheus scrape target: GET /metrics answers `test_up <value>` (a gauge the test
    sets), plus a counter of scrapes."""

    def __init__(self, value: int = 1) -> None:
        super().__init__()
        self.value = value
        self.handle("/metrics", self._metrics)

    def set(self, value: int) -> None:
        self.value = value

    def _metrics(self, req: Request) -> Reply:
        text = (
            "# HELP test_up Whether the test's pretend service is up.\n"
            "# TYPE test_up gauge\n"
            f"test_up {self.value}\n"
        )
        return Reply(200, text.encode(), {"Content-Type": "text/plain; version=0.0.4"})

    def scrapes(self) -> int:
        return len(self.requests("/metrics"))


# --------------------------------------------------------------------------------------------
# SMTP


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list
    raw: bytes
    tls: bool

    @property
    def message(self):
        return message_from_bytes(self.raw, policy=policy.default)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def text(self) -> str:
        """Every text part, decoded, joined (plain and HTML)."""
        m = self.message
        parts = []
        for part in (m.walk() if m.is_multipart() else [m]):
            if part.get_content_maintype() == "text":
                parts.append(part.get_content())
        return "\n".join(parts)


def self_signed_cert(directory: pathlib.Path, cn: str = "127.0.0.1") -> tuple:
    """(cert.pem, key.pem): a throwaway self-signed certificate made with openssl."""
    directory = pathlib.Path(directory)
    cert, key = directory / "cert.pem", directory / "key.pem"
    r = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={cn}", "-addext", f"subjectAltName=IP:{cn}",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )
    if r.returncode != 0:
        raise RuntimeError(f"openssl req failed: {r.stderr}")
    return cert, key


class SmtpSink:
    """An SMTP server (aiosmtpd) that keeps every message. With `certdir`, it offers STARTTLS
    with a self-signed certificate and refuses mail before it (require_starttls)."""

    def __init__(self, certdir: Optional[pathlib.Path] = None) -> None:
        from aiosmtpd.controller import Controller

        self.lock = threading.Lock()
        self.mails: list = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with outer.lock:
                    outer.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos),
                                            envelope.original_content or envelope.content,
                                            session.ssl is not None))
                return "250 Message accepted for delivery"

        kw = {}
        if certdir is not None:
            cert, key = self_signed_cert(certdir)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(cert), str(key))
            kw = {"tls_context": ctx, "require_starttls": True}
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kw)
        self.controller.start()

    def snapshot(self) -> list:
        with self.lock:
            return list(self.mails)

    def wait(self, n: int = 1, timeout: float = 10.0, pred=None) -> list:
        deadline = time.monotonic() + timeout
        while True:
            got = [m for m in self.snapshot() if pred is None or pred(m)]
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {n} mail(s): got "
                    f"{[(m.subject, m.rcpt_tos) for m in self.snapshot()]}")
            time.sleep(0.05)

    def close(self) -> None:
        self.controller.stop()
