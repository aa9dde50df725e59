"""The journald, command and webhook sinks, against real sockets, processes and HTTP servers.

The journal tests bind a unix datagram socket of their own and parse the native protocol they
receive (both field forms, and a memfd passed with SCM_RIGHTS); the webhook tests run an HTTP
server on 127.0.0.1 in a thread; the command tests run small Python scripts.
"""

from __future__ import annotations

import array
import base64
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from guardian.alerts import Alert, Alerter
from guardian.alerts.command import CommandSink
from guardian.alerts.journald import JournaldSink, StdoutPrioritySink
from guardian.alerts.webhook import WebhookError, WebhookSink
from guardian.demo import BotTree
from tests.conftest import Result, read_json, write_json


def make_alert(
    level: str = "CRITICAL",
    *,
    code: str = "POSITION_CONFLICT",
    subject: str = "BTC/USDT",
    message: str = "exchange and trade store disagree",
    action_required: bool = True,
    event: str = "firing",
    context: Mapping[str, Any] | None = None,
) -> Alert:
    ctx = {"exchange_qty": "0.5", "store_qty": "0.0"} if context is None else dict(context)
    return Alert(
        ts="2026-11-21T12:00:00.000Z", level=level, code=code, subject=subject, message=message,
        action_required=action_required, event=event, context=ctx,
    )  # fmt: skip


class Recording:
    name = "recording"

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)


# --- the journal ------------------------------------------------------------------------------


def parse_native(data: bytes) -> dict[str, list[bytes]]:
    """journald's native format: ``NAME=value\\n`` or ``NAME\\n`` + le64 length + value + ``\\n``."""
    out: dict[str, list[bytes]] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            i = nl + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            assert len(value) == size, "length-prefixed value cut short"
            assert data[nl + 9 + size : nl + 10 + size] == b"\n", "length-prefixed value not closed by a newline"
            i = nl + 10 + size
        assert re.fullmatch(rb"[A-Z][A-Z0-9_]{0,63}", name), name
        out.setdefault(name.decode(), []).append(value)
    return out


@dataclass
class Entry:
    fields: dict[str, list[bytes]]
    raw: bytes
    via_fd: bool = False
    seals: int | None = None

    def __getitem__(self, name: str) -> str:
        values = self.fields[name]
        assert len(values) == 1, f"{name} sent {len(values)} times"
        return values[0].decode()


@dataclass
class Journal:
    path: Path
    sock: socket.socket
    extra: list[socket.socket] = field(default_factory=list)

    def receive(self) -> Entry:
        data, anc, flags, _ = self.sock.recvmsg(1 << 21, socket.CMSG_SPACE(4))
        assert not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
        fds: list[int] = []
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(cdata[: len(cdata) - len(cdata) % got.itemsize])
                fds.extend(got)
        if not fds:
            return Entry(parse_native(data), data)
        assert data == b"", "a datagram carrying a memfd must be empty"
        assert len(fds) == 1
        fd = fds[0]
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS) if hasattr(fcntl, "F_GET_SEALS") else None
            size = os.fstat(fd).st_size
            chunks: list[bytes] = []
            offset = 0
            while offset < size:
                chunk = os.pread(fd, size - offset, offset)
                assert chunk
                chunks.append(chunk)
                offset += len(chunk)
        finally:
            os.close(fd)
        raw = b"".join(chunks)
        return Entry(parse_native(raw), raw, via_fd=True, seals=seals)

    def assert_nothing_pending(self) -> None:
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(1)
        finally:
            self.sock.settimeout(5)

    def rebind(self) -> None:
        """journald restarting: the old socket is gone and a new one listens at the same path."""
        self.sock.close()
        self.path.unlink()
        self.sock = bind(self.path)


def bind(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(os.fspath(path))
    s.settimeout(5)  # a test that receives nothing fails instead of hanging
    return s


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    short: Path | None = None
    path = tmp_path / "journal.sock"
    if len(os.fsencode(path)) > 100:  # sun_path holds 108 bytes; long test names make long tmp_paths
        short = Path(tempfile.mkdtemp(prefix="guardian-j-"))
        path = short / "journal.sock"
    j = Journal(path, bind(path))
    yield j
    j.sock.close()
    if short is not None:
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def sink(journal: Journal) -> Iterator[JournaldSink]:
    s = JournaldSink(journal.path)
    yield s
    s.close()


def test_an_alert_arrives_as_one_datagram_with_every_journal_field(journal: Journal, sink: JournaldSink) -> None:
    alert = make_alert(context={"exchange_qty": "0.5", "order-id": 42, "ünï code": "x"})
    sink.emit(alert)
    got = journal.receive()
    assert not got.via_fd
    assert got["MESSAGE"] == alert.line()
    assert got["MESSAGE"] == (
        "[CRITICAL] POSITION_CONFLICT: exchange and trade store disagree [ACTION REQUIRED]"
        " | exchange_qty=0.5, order-id=42, ünï code=x"
    )
    assert got["PRIORITY"] == "2"
    assert got["SYSLOG_IDENTIFIER"] == "guardian"
    assert got["GUARDIAN_LEVEL"] == "CRITICAL"
    assert got["GUARDIAN_CODE"] == "POSITION_CONFLICT"
    assert got["GUARDIAN_SUBJECT"] == "BTC/USDT"
    assert got["GUARDIAN_EVENT"] == "firing"
    assert got["GUARDIAN_FINGERPRINT"] == "POSITION_CONFLICT:BTC/USDT"
    assert got["GUARDIAN_CTX_EXCHANGE_QTY"] == "0.5"
    assert got["GUARDIAN_CTX_ORDER_ID"] == "42"
    assert got["GUARDIAN_CTX__N__CODE"] == "x"
    journal.assert_nothing_pending()


@pytest.mark.parametrize(
    ("level", "prio"), [("CRITICAL", "2"), ("HIGH", "3"), ("MEDIUM", "4"), ("LOW", "5"), ("INFO", "6")]
)
def test_the_priority_follows_the_level(journal: Journal, sink: JournaldSink, level: str, prio: str) -> None:
    sink.emit(make_alert(level, action_required=False, event="gate"))
    got = journal.receive()
    assert got["PRIORITY"] == prio
    assert got["GUARDIAN_LEVEL"] == level
    assert got["GUARDIAN_EVENT"] == "gate"
    assert got["MESSAGE"].startswith(f"[{level}] POSITION_CONFLICT: ")


def test_a_fingerprint_given_in_the_context_is_sent_as_is(journal: Journal, sink: JournaldSink) -> None:
    sink.emit(make_alert(context={"fingerprint": "HEAL_LOOP:restart_bot:bot"}))
    assert journal.receive()["GUARDIAN_FINGERPRINT"] == "HEAL_LOOP:restart_bot:bot"


def test_context_keys_become_valid_field_names_of_at_most_64_characters(journal: Journal, sink: JournaldSink) -> None:
    sink.emit(make_alert(context={"9lives": 1, "_private": 2, "a.b/c": 3, "k" * 100: 4}))
    got = journal.receive()
    assert got["GUARDIAN_CTX_9LIVES"] == "1"
    assert got["GUARDIAN_CTX__PRIVATE"] == "2"
    assert got["GUARDIAN_CTX_A_B_C"] == "3"
    long_name = ("GUARDIAN_CTX_" + "K" * 100)[:64]
    assert got[long_name] == "4"  # parse_native also checks every name is [A-Z][A-Z0-9_]{0,63}


def test_a_value_with_a_newline_is_sent_in_the_length_prefixed_form(journal: Journal, sink: JournaldSink) -> None:
    message = 'first line\nsecond line with = and "quotes"'
    alert = make_alert(message=message, context={"trace": "a\nb", "plain": "p=q"})
    sink.emit(alert)
    got = journal.receive()
    line = alert.line().encode()
    assert b"MESSAGE\n" + struct.pack("<Q", len(line)) + line + b"\n" in got.raw
    assert b"MESSAGE=" not in got.raw
    assert b"GUARDIAN_CTX_TRACE\n" + struct.pack("<Q", 3) + b"a\nb\n" in got.raw
    assert b"GUARDIAN_CTX_PLAIN=p=q\n" in got.raw  # no newline: the simple form
    assert got["MESSAGE"] == alert.line()
    assert got["GUARDIAN_CTX_TRACE"] == "a\nb"
    assert got["GUARDIAN_CODE"] == "POSITION_CONFLICT"  # the fields after it are read correctly


def test_a_one_mebibyte_value_is_passed_in_a_sealed_memfd(journal: Journal, sink: JournaldSink) -> None:
    big = "x" * (1 << 20)
    sink.emit(make_alert(context={"dump": big, "tail": "line\nbreak"}))
    got = journal.receive()
    assert got.via_fd
    assert got["GUARDIAN_CTX_DUMP"] == big
    assert got["GUARDIAN_CTX_TAIL"] == "line\nbreak"
    assert got["GUARDIAN_CODE"] == "POSITION_CONFLICT"
    if got.seals is not None:  # the kernel supports seals: journald requires these on a memfd
        wanted = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        assert got.seals & wanted == wanted
    sink.emit(make_alert())  # and the next, small alert goes as a plain datagram again
    assert not journal.receive().via_fd


def test_the_socket_is_connected_once_and_kept_between_alerts(journal: Journal, sink: JournaldSink) -> None:
    sink.emit(make_alert(subject="one"))
    assert journal.receive()["GUARDIAN_SUBJECT"] == "one"
    journal.path.unlink()  # the path is gone, the connected socket is not
    sink.emit(make_alert(subject="two"))
    assert journal.receive()["GUARDIAN_SUBJECT"] == "two"


def test_a_restarted_journal_is_reconnected_to_without_losing_the_alert(journal: Journal, sink: JournaldSink) -> None:
    sink.emit(make_alert(subject="before"))
    assert journal.receive()["GUARDIAN_SUBJECT"] == "before"
    journal.rebind()
    sink.emit(make_alert(subject="after"))
    assert journal.receive()["GUARDIAN_SUBJECT"] == "after"


def test_a_journal_that_disappears_makes_emit_raise(journal: Journal, sink: JournaldSink) -> None:
    sink.emit(make_alert())
    journal.receive()
    journal.sock.close()
    journal.path.unlink()
    with pytest.raises(OSError) as raised:
        sink.emit(make_alert())
    assert raised.value.errno in (errno.ENOENT, errno.ECONNREFUSED)


def test_the_alerter_turns_a_vanished_journal_into_a_warning_and_still_runs_the_other_sinks(
    journal: Journal, sink: JournaldSink, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after = Recording(), Recording()
    alerter = Alerter([before, sink, after])
    alerter.emit(make_alert(subject="first"))
    assert journal.receive()["GUARDIAN_SUBJECT"] == "first"
    journal.sock.close()
    journal.path.unlink()
    capsys.readouterr()
    alerter.emit(make_alert(subject="second"))
    assert [a.subject for a in before.alerts] == ["first", "second"]
    assert [a.subject for a in after.alerts] == ["first", "second"]
    assert "warning: alert sink journald failed" in capsys.readouterr().err


def test_available_is_true_only_where_a_journal_listens(journal: Journal, tmp_path: Path) -> None:
    assert JournaldSink.available(journal.path)
    assert not JournaldSink.available(tmp_path / "missing.sock")
    regular = tmp_path / "regular"
    regular.write_text("not a socket")
    assert not JournaldSink.available(regular)
    journal.sock.close()  # a stale socket file, nobody behind it
    assert journal.path.exists()
    assert not JournaldSink.available(journal.path)


def test_the_stdout_fallback_prefixes_every_line_with_the_priority(capsys: pytest.CaptureFixture[str]) -> None:
    out = StdoutPrioritySink()
    out.emit(make_alert("HIGH", context={}))
    out.emit(make_alert("INFO", message="two\nlines", action_required=False, context={}))
    assert capsys.readouterr().out.splitlines() == [
        "<3>[HIGH] POSITION_CONFLICT: exchange and trade store disagree [ACTION REQUIRED]",
        "<6>[INFO] POSITION_CONFLICT: two",
        "<6>lines",
    ]


# --- the command ------------------------------------------------------------------------------


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text("import os, sys, pathlib, subprocess, time\n" + body)
    return [sys.executable, str(path)]


def test_the_command_gets_the_alert_json_on_stdin_and_its_fields_in_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "received.json"
    env_out = tmp_path / "env.txt"
    argv = script(
        tmp_path,
        "bridge.py",
        "pathlib.Path(sys.argv[1]).write_bytes(sys.stdin.buffer.read())\n"
        "pathlib.Path(sys.argv[2]).write_text(os.environ['GUARDIAN_ALERT_LEVEL'] + ' '"
        " + os.environ['GUARDIAN_ALERT_CODE'])\n",
    )
    alert = make_alert(message='a "quoted"\nmessage')
    CommandSink([*argv, str(out), str(env_out)], timeout=10).emit(alert)
    assert json.loads(out.read_text()) == alert.to_json()
    assert env_out.read_text() == "CRITICAL POSITION_CONFLICT"


def test_a_failing_command_raises_with_its_exit_code_and_the_first_line_of_its_stderr(tmp_path: Path) -> None:
    argv = script(
        tmp_path, "fail.py", "sys.stdin.read()\nsys.stderr.write('bot token rejected\\nsecond line\\n')\nsys.exit(3)\n"
    )
    with pytest.raises(RuntimeError) as raised:
        CommandSink([*argv, "--token", "SECRET"], timeout=10).emit(make_alert())
    text = str(raised.value)
    assert "exited with 3" in text
    assert "bot token rejected" in text
    assert "second line" not in text
    assert "SECRET" not in text


def test_a_command_past_its_timeout_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    argv = script(
        tmp_path,
        "hang.py",
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "pathlib.Path(sys.argv[1]).write_text(f'{os.getpid()} {child.pid}')\n"
        "time.sleep(60)\n",
    )
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=r"timed out after 1\.5s"):
            CommandSink([*argv, str(pids)], timeout=1.5).emit(make_alert())
        assert time.monotonic() - started < 5
        own, grandchild = (int(p) for p in pids.read_text().split())
        assert not psutil.pid_exists(own)  # killed and reaped
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the orphaned grandchild is reaped by init: wait for it
            try:
                if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the command's own child survived the timeout")
    finally:
        if pids.exists():
            for pid in (int(p) for p in pids.read_text().split()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_a_failing_command_is_a_warning_and_the_other_sinks_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Recording()
    argv = script(tmp_path, "exit1.py", "sys.exit(1)\n")
    Alerter([CommandSink(argv, timeout=10), rec]).emit(make_alert())
    assert len(rec.alerts) == 1
    assert "warning: alert sink command failed: RuntimeError: command " in capsys.readouterr().err


# --- the webhook ------------------------------------------------------------------------------


@dataclass
class Hook:
    url: str
    statuses: list[int]  # answered in turn, then 200
    requests: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    hang: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(body) for _, _, body in self.requests]


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook("", [])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.requests.append((self.path, self.headers.get("Content-Type"), body))
                state.auth.append(self.headers.get("Authorization"))
                status = state.statuses.pop(0) if state.statuses else 200
            if state.hang:
                state.release.wait(10)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the client gave up waiting
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://user:pa55word@127.0.0.1:{server.server_address[1]}/hook/T0KEN?token=S3CRET"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def assert_no_secret(text: str) -> None:
    for secret in ("pa55word", "T0KEN", "S3CRET", "user:"):
        assert secret not in text


def test_the_webhook_receives_the_alert_json(hook: Hook) -> None:
    alert = make_alert()
    WebhookSink(hook.url, timeout=5, retries=2).emit(alert)
    assert len(hook.requests) == 1
    path, content_type, _ = hook.requests[0]
    assert path == "/hook/T0KEN?token=S3CRET"
    assert content_type == "application/json"
    assert hook.bodies == [alert.to_json()]
    assert hook.auth == ["Basic " + base64.b64encode(b"user:pa55word").decode()]  # the URL's userinfo


def test_a_webhook_failing_twice_with_500_is_retried_with_backoff_until_it_succeeds(hook: Hook) -> None:
    hook.statuses[:] = [500, 503]
    waits: list[float] = []
    WebhookSink(hook.url, timeout=5, retries=2, sleep=waits.append).emit(make_alert())
    assert len(hook.requests) == 3
    assert hook.bodies[0] == hook.bodies[2]
    assert waits == pytest.approx([0.2, 0.4])


def test_a_webhook_that_keeps_failing_raises_after_the_last_try_without_the_token(hook: Hook) -> None:
    hook.statuses[:] = [500] * 5
    waits: list[float] = []
    with pytest.raises(WebhookError) as raised:
        WebhookSink(hook.url, timeout=5, retries=1, sleep=waits.append).emit(make_alert())
    assert len(hook.requests) == 2
    assert len(waits) == 1
    assert "after 2 tries: HTTP 500" in str(raised.value)
    assert "127.0.0.1" in str(raised.value)
    assert_no_secret(str(raised.value))


def test_a_webhook_answering_400_is_not_retried(hook: Hook) -> None:
    hook.statuses[:] = [400]
    waits: list[float] = []
    with pytest.raises(WebhookError, match="HTTP 400"):
        WebhookSink(hook.url, timeout=5, retries=3, sleep=waits.append).emit(make_alert())
    assert len(hook.requests) == 1
    assert waits == []


def test_a_webhook_that_hangs_past_the_timeout_raises_without_waiting_again(hook: Hook) -> None:
    hook.hang = True
    started = time.monotonic()
    with pytest.raises(WebhookError, match=r"no answer within 0\.3s") as raised:
        WebhookSink(hook.url, timeout=0.3, retries=2).emit(make_alert())
    assert time.monotonic() - started < 3
    assert len(hook.requests) == 1
    assert_no_secret(str(raised.value))


def test_a_refused_connection_is_retried_and_the_error_hides_the_token() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits: list[float] = []
    url = f"http://user:pa55word@127.0.0.1:{port}/hook/T0KEN?token=S3CRET"
    with pytest.raises(WebhookError) as raised:
        WebhookSink(url, timeout=2, retries=2, sleep=waits.append).emit(make_alert())
    assert waits == pytest.approx([0.2, 0.4])
    assert "refused" in str(raised.value).lower()
    assert f"http://127.0.0.1:{port}" in str(raised.value)
    assert_no_secret(str(raised.value))


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///nohost"])
def test_a_webhook_url_that_is_not_http_is_refused_at_construction(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSink(url)


def test_the_gate_sends_its_alerts_to_the_journal_with_guardian_fields_and_not_twice_to_stderr(
    journal: Journal,
    tree: BotTree,
    make_config: Callable[..., Path],
    cli: Callable[..., Result],
) -> None:
    doc = read_json(tree.positions)
    doc["open_positions"][0]["stop_loss"] = None
    write_json(tree.positions, doc)
    cfg = make_config(tree, mode="real", extra={"alerts": {"journald_socket": str(journal.path)}})
    r = cli(cfg, "gate")
    assert r.code == 1
    first, second = journal.receive(), journal.receive()
    journal.assert_nothing_pending()
    assert (first["GUARDIAN_CODE"], first["GUARDIAN_LEVEL"], first["PRIORITY"]) == (
        "STOP_LOSS_MISSING",
        "CRITICAL",
        "2",
    )
    assert first["GUARDIAN_EVENT"] == "firing"
    assert first["SYSLOG_IDENTIFIER"] == "guardian"
    assert (second["GUARDIAN_CODE"], second["GUARDIAN_EVENT"]) == ("GATE_REFUSED", "gate")
    # stderr is not a terminal here, so the journal alone carries the findings; the reason line stays.
    assert "[CRITICAL] STOP_LOSS_MISSING" not in r.err
    assert r.err.strip().splitlines()[-1].startswith("guardian gate: REFUSED (real mode)")
