"""What the crowd benchmarks share: targets (a running server and the environment of its
management commands), signing in over HTTP, and a small asyncio WebSocket client that follows a
debate exactly as the page does (docs/streaming.md): snapshot first, then deltas applied only when
their ``seq`` is the next one, a fresh snapshot after a gap.

The client is a few lines of RFC 6455 (text frames only) on non-blocking sockets, so that a
thousand of them fit in one process with nothing to install; it stamps each message when this
process reads its bytes, before parsing it, and keeps the kernel's receive stamp of those bytes
(Linux ``SO_TIMESTAMPNS``) beside it. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import re
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """A running server (``serve``) and the environment its management commands need.

    Written ``NAME=URL[,VAR=VALUE...]``, e.g.
    ``core=http://127.0.0.1:8001,ARENA_DATA_DIR=data/bench-core,ARENA_EMBEDDED_REDIS_PORT=6391``.
    """

    name: str
    url: str
    env: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Target:
        name, _, rest = text.partition("=")
        parts = rest.split(",")
        url = parts[0].rstrip("/")
        host = urlsplit(url).hostname
        if not name or host != "127.0.0.1":
            raise SystemExit(
                f"--target {text!r}: want NAME=http://127.0.0.1:PORT[,VAR=VALUE...] (benchmarks stay on 127.0.0.1)"
            )
        env = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
        return cls(name, url, env)

    @property
    def host_port(self) -> tuple[str, int]:
        split = urlsplit(self.url)
        return split.hostname or "127.0.0.1", split.port or 80

    def manage(self, *args: str, timeout_s: float = 1800) -> str:
        """Run ``manage.py`` with this target's environment; its standard output."""
        env = {**os.environ, **self.env}
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            check=False,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"[{self.name}] manage.py {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        return done.stdout


def create_debate(target: Target, question: str, rounds: int, max_tokens: int, judges: Sequence[str] = ()) -> int:
    """Queue a debate on the embedded model with ``run_debate --no-wait``; its id."""
    args = ["run_debate", "--question", question, "--rounds", str(rounds), "--max-tokens", str(max_tokens), "--no-wait"]
    for judge in judges:
        args += ["--judge", judge]
    out = target.manage(*args)
    found = re.search(r"debate (\d+) created", out)
    if found is None:
        raise SystemExit(f"[{target.name}] run_debate said: {out}")
    return int(found.group(1))


async def sign_in(target: Target, username: str, password: str) -> str:
    """Sign in through the login form; the session id."""
    async with httpx.AsyncClient(base_url=target.url, timeout=60) as client:
        page = await client.get("/accounts/login/")
        token = client.cookies.get("csrftoken") or ""
        answer = await client.post(
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{target.url}/accounts/login/"},
        )
        session = client.cookies.get("sessionid")
        if answer.status_code != 302 or not session:
            raise SystemExit(
                f"[{target.name}] cannot sign in as {username!r}: HTTP {answer.status_code} (page {page.status_code})"
            )
        return session


async def sessions_for(target: Target, username: str, password: str, count: int, parallel: int = 4) -> list[str]:
    gate = asyncio.Semaphore(parallel)

    async def one() -> str:
        async with gate:
            return await sign_in(target, username, password)

    return list(await asyncio.gather(*(one() for _ in range(count))))


class Closed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


# Linux's SO_TIMESTAMPNS (and SCM_TIMESTAMPNS): the kernel stamps each received packet (CLOCK_REALTIME)
# and hands the stamp to ``recvmsg`` as ancillary data. Python's socket module does not name it.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")


class _Frames:
    """The client side of one connection: the handshake's answer, then whole text messages, each
    stamped twice: ``time.monotonic()`` when this process read its bytes, and the kernel's receive
    time of those bytes (``SO_TIMESTAMPNS``, wall clock) where the platform gives it.

    Why the kernel's stamp: the spread of a delta over a thousand clients is measured in this one
    process, which reads the thousand sockets one after the other and parses what it read between
    two polls. A socket that became readable while the benchmark was busy with the other 999 is
    stamped late by this process, and that lateness is the benchmark's, not the server's. The
    kernel stamps the bytes as the server's ``send`` puts them in this socket's queue (on loopback
    that is the server's write itself), so the spread of the kernel stamps is the server's fan-out.
    One caveat, which can only make a stamp later, never earlier: two frames that wait unread in
    the queue together are merged by the kernel and both carry the later one's stamp.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.head: asyncio.Future[bytes] = self.loop.create_future()
        self.messages: collections.deque[tuple[float, float | None, bytes | Closed]] = collections.deque()
        self.partial = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            self.kernel_stamps = True
        except OSError:
            self.kernel_stamps = False
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        while not self.lost:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(1 << 18, socket.CMSG_SPACE(_TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, ancillary = b"", []
            if not data:
                self.connection_lost()
                return
            kernel = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                    kernel = seconds + nanoseconds / 1e9
            self.data_received(data, time.monotonic(), kernel)

    def write(self, data: bytes) -> None:
        """Small frames only (the handshake, a snapshot request, a pong): the socket's buffer takes them whole."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.connection_lost()

    def data_received(self, data: bytes, now: float, kernel: float | None) -> None:
        self.buffer += data
        if not self.head.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head.set_result(bytes(self.buffer[: end + 4]))
            del self.buffer[: end + 4]
        added = False
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            length, start = second & 0x7F, 2
            if length == 126:
                if len(self.buffer) < 4:
                    break
                (length,), start = struct.unpack_from("!H", self.buffer, 2), 4
            elif length == 127:
                if len(self.buffer) < 10:
                    break
                (length,), start = struct.unpack_from("!Q", self.buffer, 2), 10
            if len(self.buffer) < start + length:
                break
            payload = bytes(self.buffer[start : start + length])
            del self.buffer[: start + length]
            opcode = first & 0x0F
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.messages.append((now, kernel, Closed(code)))
                added = True
            elif opcode == 0x9:
                self.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode in (0x1, 0x0):
                self.partial += payload
                if first & 0x80:
                    self.messages.append((now, kernel, bytes(self.partial)))
                    self.partial.clear()
                    added = True
        if added:
            self._wake()

    def connection_lost(self) -> None:
        if self.lost:
            return
        self.lost = True
        self.loop.remove_reader(self.sock.fileno())
        if not self.head.done():
            self.head.set_exception(ConnectionResetError("closed during the handshake"))
        self._wake()

    def close(self) -> None:
        self.connection_lost()
        self.sock.close()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class WebSocket:
    """One client connection: text frames out (masked), text frames in (stamped on arrival), pings answered."""

    def __init__(self, frames: _Frames) -> None:
        self.frames = frames

    @classmethod
    async def connect(cls, target: Target, path: str, session: str) -> WebSocket:
        host, port = target.host_port
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        frames = _Frames(sock)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        frames.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n"
                f"Cookie: sessionid={session}\r\n\r\n"
            ).encode()
        )
        try:
            head = await frames.head
        except BaseException:
            frames.close()
            raise
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            frames.close()
            raise Closed(int(status.split()[1]) if len(status.split()) > 1 and status.split()[1].isdigit() else None)
        return cls(frames)

    async def send(self, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        mask = secrets.token_bytes(4)
        header = bytes([0x81])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        elif len(data) < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(data))
        self.frames.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    async def receive_timed(self) -> tuple[dict[str, object], float, float | None]:
        """The next text message, when this process read it (``time.monotonic``) and when the kernel
        received it (wall clock; None where the platform gives no stamp)."""
        frames = self.frames
        while not frames.messages:
            if frames.lost:
                raise asyncio.IncompleteReadError(b"", None)
            frames.waiter = frames.loop.create_future()
            await frames.waiter
        arrived, kernel, message = frames.messages.popleft()
        if isinstance(message, Closed):
            raise message
        return json.loads(message), arrived, kernel

    async def receive_stamped(self) -> tuple[dict[str, object], float]:
        """The next text message and the time (``time.monotonic``) this process read its bytes."""
        msg, arrived, _ = await self.receive_timed()
        return msg, arrived

    async def receive(self) -> dict[str, object]:
        return (await self.receive_timed())[0]

    def close(self) -> None:
        self.frames.close()


@dataclass
class Follower:
    """Follows one debate as the page does and keeps what is needed to judge the delivery."""

    debate_id: int
    turns: dict[int, dict[str, object]] = field(default_factory=dict)
    gaps: int = 0
    snapshots: int = 0
    finished: bool = False
    exact: int = 0
    wrong: int = 0
    arrivals: dict[tuple[int, int], float] = field(default_factory=dict)
    # The same deltas stamped by the kernel as their bytes were received (wall clock), where it stamps.
    kernel_arrivals: dict[tuple[int, int], float] = field(default_factory=dict)
    connected_at: float | None = None
    error: str = ""
    mismatch: str = ""
    # Frames received and the events they carried (a ``batch`` frame carries several).
    frames: int = 0
    events: int = 0
    snapshot_asked: bool = False

    def on_message(self, msg: dict[str, object], now: float, kernel: float | None = None) -> dict[str, object] | None:
        """Apply one server frame; a message to send back (a snapshot request after a gap), if any.
        A ``batch``'s events are applied in order, each as if it had come alone, at the frame's time."""
        self.frames += 1
        if msg.get("type") != "batch":
            return self._apply(msg, now, kernel)
        reply = None
        for event in msg["events"]:  # type: ignore[union-attr]
            reply = self._apply(event, now, kernel) or reply
        return reply

    def _apply(self, msg: dict[str, object], now: float, kernel: float | None = None) -> dict[str, object] | None:
        self.events += 1
        kind = msg.get("type")
        if kind == "snapshot":
            self.snapshots += 1
            self.snapshot_asked = False
            if self.connected_at is None:
                self.connected_at = now
            for turn in msg["turns"]:  # type: ignore[union-attr]
                self.turns[int(turn["turn"])] = {"seq": 0, "text": str(turn["text"]), "final": True, "live": False}
            for entry in msg["inflight"]:  # type: ignore[union-attr]
                old = self.turns.get(int(entry["turn"]))
                if old is None or not old["final"]:
                    self.turns[int(entry["turn"])] = {
                        "seq": int(entry["seq"]),
                        "text": str(entry["text"]),
                        "final": False,
                        "live": False,
                    }
            if msg["debate"]["status"] == "finished":  # type: ignore[index]
                self.finished = True
        elif kind == "turn_start":
            self.turns.setdefault(int(msg["turn"]), {"seq": 0, "text": "", "final": False, "live": True})  # type: ignore[arg-type]
        elif kind == "delta":
            turn, seq = int(msg["turn"]), int(msg["seq"])  # type: ignore[arg-type]
            entry = self.turns.get(turn)
            if entry is None or entry["final"] or seq <= int(entry["seq"]):  # type: ignore[arg-type]
                return None
            if seq != int(entry["seq"]) + 1:  # type: ignore[arg-type]
                # One request at a time, as the page does: later deltas of the turn are gaps too.
                if self.snapshot_asked:
                    return None
                self.gaps += 1
                self.snapshot_asked = True
                return {"type": "snapshot"}
            entry["seq"], entry["text"] = seq, str(entry["text"]) + str(msg["text"])
            self.arrivals[(turn, seq)] = now
            if kernel is not None:
                self.kernel_arrivals[(turn, seq)] = kernel
        elif kind == "turn_reset":
            entry = self.turns.get(int(msg["turn"]))  # type: ignore[arg-type]
            if entry is not None and not entry["final"] and int(msg["seq"]) > int(entry["seq"]):  # type: ignore[arg-type]
                entry["seq"], entry["text"] = int(msg["seq"]), ""  # type: ignore[arg-type]
        elif kind == "turn_end":
            entry = self.turns.setdefault(int(msg["turn"]), {"seq": 0, "text": "", "final": False, "live": False})  # type: ignore[arg-type]
            if not entry["final"]:
                if entry["text"] == msg["text"]:
                    self.exact += 1
                else:
                    self.wrong += 1
                    self.mismatch = (
                        self.mismatch
                        or f"turn {msg['turn']}: streamed ...{str(entry['text'])[-40:]!r}, committed ...{str(msg['text'])[-40:]!r}"
                    )
                entry["final"], entry["text"] = True, str(msg["text"])
        elif kind == "status" and msg.get("status") in ("finished", "failed", "cancelled"):
            self.finished = msg.get("status") == "finished"
            if not self.finished:
                self.error = f"debate {msg.get('status')}"
        return None

    @property
    def done(self) -> bool:
        return self.finished or bool(self.error)


async def follow(target: Target, debate_id: int, session: str, deadline: float) -> Follower:
    """Connect and follow ``debate_id`` until it is over or ``deadline`` (monotonic) passes."""
    state = Follower(debate_id)
    try:
        ws = await WebSocket.connect(target, f"/ws/debates/{debate_id}/", session)
    except (Closed, OSError) as exc:
        state.error = f"connect: {exc}"
        return state
    try:
        while not state.done:
            left = deadline - time.monotonic()
            if left <= 0:
                state.error = "timed out"
                break
            msg, arrived, kernel = await asyncio.wait_for(ws.receive_timed(), left)
            reply = state.on_message(msg, arrived, kernel)
            if reply is not None:
                await ws.send(reply)
    except Closed as exc:
        state.error = f"closed by the server ({exc.code})"
    except (TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
        state.error = f"{type(exc).__name__}: {exc}"
    finally:
        ws.close()
    return state


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"
