"""Abuse limits: sign-in throttling, per-user POST limits, and the WebSocket's per-connection and
per-session limits. Every number comes from the environment (.env.example).

Counters that must hold across web processes (sign-ins, POSTs) live in the ``limits`` cache, which
is Redis; they are fixed windows keyed by the window's start, so they need no clean-up.

**Sign-in rule.** Failures are counted per (username, client address) pair. After
``ARENA_LOGIN_FAILURES`` failures within ``ARENA_LOGIN_WINDOW_S``, that pair is refused (HTTP 429,
right password or not) for ``ARENA_LOGIN_LOCKOUT_S``. The lock never outlives its lockout, and
attempts during it neither extend it nor count, so an attacker elsewhere cannot lock a real judge
out at all, and one behind the judge's own address (a shared NAT) only for one lockout at a time.
A second counter refuses an address that fails ``ARENA_LOGIN_IP_FAILURES`` times in the window,
whatever the usernames (password spraying). A successful sign-in clears its pair's failures.
The client address is the one Daphne reports: behind a proxy run Daphne with ``--proxy-headers``
(docker/) so that it is the browser's, not the proxy's.

**POSTs.** ``post_limit("verdict")`` allows ``ARENA_POST_LIMITS[scope]`` POSTs a minute per user
and answers 429 with ``Retry-After`` beyond that.

**WebSocket.** :class:`WindowCounter` counts one connection's frames (and, separately, its
snapshot requests); :class:`SessionSockets` caps the sockets one signed-in session holds open,
counted in Redis across all web processes. Both refusals close the socket with
:data:`WS_CLOSE_LIMITED`, which the page explains.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from arena.streaming import redis_client

logger = logging.getLogger(__name__)

WS_CLOSE_LIMITED = 4429


@dataclass(frozen=True)
class Refusal:
    """A request refused by a limit: what to tell the person, and when to try again."""

    message: str
    retry_after_s: int


_limits: BaseCache | None = None
_limits_lock = threading.Lock()


def _cache() -> BaseCache:
    """The ``limits`` cache, one instance (and one Redis connection pool) per process.

    ``caches["limits"]`` is local to the asyncio context, and under ASGI every request runs in a new
    one: each POST built a new client with its own pool, so it opened a new TCP connection to Redis
    (and looked up redis-py's version on disk) to count one hit, leaving the socket to the garbage
    collector. The client's pool is thread-safe, so the whole process shares one.
    """
    global _limits
    cache = _limits
    if cache is None:
        with _limits_lock:
            if _limits is None:
                _limits = caches.create_connection("limits")
            cache = _limits
    return cache


@receiver(setting_changed)
def _forget_limits_cache(setting: str, **_: object) -> None:
    global _limits
    if setting == "CACHES":
        _limits = None


def _window(window_s: int, now: float) -> int:
    return int(now // window_s) * window_s


def _count(key: str, window_s: int, now: float) -> int:
    """Count one event in the current fixed window of ``key``; the window's count so far.

    On Redis one atomic round trip (``SET NX EX`` then ``INCR`` in a ``MULTI``) instead of the cache
    API's three (``add``; ``incr`` is ``EXISTS`` then ``INCR``), which also failed if the key
    expired between them. The stored value stays what the cache API reads: a plain integer.
    """
    full = f"{key}:{_window(window_s, now)}"
    cache = _cache()
    if isinstance(cache, RedisCache):
        redis_key = cache.make_and_validate_key(full)
        pipe = cache._cache.get_client(redis_key, write=True).pipeline(transaction=True)
        pipe.set(redis_key, 0, nx=True, ex=window_s + 5)
        pipe.incr(redis_key)
        return int(pipe.execute()[1])
    cache.add(full, 0, window_s + 5)
    return cache.incr(full)


def _window_hit(key: str, limit: int, window_s: int, now: float | None = None) -> int | None:
    """Count one hit; if that makes more than ``limit`` in the window, the seconds until it ends."""
    now = time.time() if now is None else now
    if _count(key, window_s, now) > limit:
        return max(1, math.ceil(_window(window_s, now) + window_s - now))
    return None


def too_many(request: HttpRequest, refusal: Refusal) -> HttpResponse:
    """HTTP 429 with ``Retry-After`` and a page that says what was refused and for how long."""
    response = render(request, "rate_limited.html", {"refusal": refusal}, status=429)
    response["Retry-After"] = str(refusal.retry_after_s)
    return response


# ----- POSTs -------------------------------------------------------------------------------------


def check_post(scope: str, user_id: int) -> Refusal | None:
    limit = settings.ARENA_POST_LIMITS[scope]
    wait = _window_hit(f"post:{scope}:{user_id}", limit, 60)
    if wait is None:
        return None
    return Refusal(f"Too many {scope} submissions from your account ({limit} a minute are allowed).", wait)


def post_limit(scope: str | Callable[[HttpRequest], str]) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Limit a view's POSTs per signed-in user; ``scope`` may depend on the request (a form's action)."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            if request.method == "POST" and request.user.is_authenticated:
                name = scope(request) if callable(scope) else scope
                refusal = check_post(name, request.user.pk)
                if refusal is not None:
                    return too_many(request, refusal)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


# ----- Sign-in -----------------------------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


def _pair(username: str, address: str) -> str:
    return f"{username.strip().lower()[:150]}|{address}"


def login_refusal(username: str, address: str, now: float | None = None) -> Refusal | None:
    """Why a sign-in attempt is refused before its password is even checked, if it is."""
    now = time.time() if now is None else now
    until = _cache().get(f"login-lock:{_pair(username, address)}")
    if until is not None and until > now:
        return Refusal(
            "Too many failed sign-ins for this account from your network. Wait, then try again "
            "(other places can still sign in to it).",
            max(1, math.ceil(until - now)),
        )
    window = settings.ARENA_LOGIN_WINDOW_S
    start = _window(window, now)
    if (_cache().get(f"login-ip:{address}:{start}") or 0) >= settings.ARENA_LOGIN_IP_FAILURES:
        return Refusal("Too many failed sign-ins from your network. Wait, then try again.", max(1, math.ceil(start + window - now)))
    return None


def record_login_failure(username: str, address: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    window = settings.ARENA_LOGIN_WINDOW_S
    _count(f"login-ip:{address}", window, now)
    pair = _pair(username, address)
    if _count(f"login-fail:{pair}", window, now) >= settings.ARENA_LOGIN_FAILURES:
        lockout = settings.ARENA_LOGIN_LOCKOUT_S
        _cache().set(f"login-lock:{pair}", now + lockout, lockout)
        # The lock replaces the count: after it, the pair starts again from zero.
        _cache().delete(f"login-fail:{pair}:{_window(window, now)}")


@receiver(user_login_failed)
def _on_login_failed(sender: object, credentials: dict[str, object], request: HttpRequest | None = None, **_: object) -> None:
    # Only sign-ins through a web request count; code calling authenticate() itself is not a client.
    if request is not None:
        record_login_failure(str(credentials.get("username") or ""), client_address(request))


@receiver(user_logged_in)
def _on_logged_in(sender: object, request: HttpRequest | None, user: AbstractBaseUser, **_: object) -> None:
    if request is not None:
        pair = _pair(user.get_username(), client_address(request))
        _cache().delete(f"login-fail:{pair}:{_window(settings.ARENA_LOGIN_WINDOW_S, time.time())}")


class LoginThrottleMiddleware:
    """Refuses sign-in POSTs (the site's and the admin's) from a locked (username, address) pair."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path_info in _login_paths():
            refusal = login_refusal(request.POST.get("username", ""), client_address(request))
            if refusal is not None:
                return too_many(request, refusal)
        return self.get_response(request)


@functools.cache
def _login_paths() -> frozenset[str]:
    return frozenset({reverse("login"), reverse("admin:login")})


# ----- WebSocket ---------------------------------------------------------------------------------


class WindowCounter:
    """At most ``limit`` events a minute for one connection (a fixed one-minute window)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._start = 0.0
        self._count = 0

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self._start >= 60:
            self._start, self._count = now, 0
        self._count += 1
        return self._count <= self.limit


@dataclass(frozen=True)
class Slot:
    """One socket's place in its session's count: the session's sorted set and the socket's member
    in it. ``counted`` is False for a socket let in while Redis could not be asked (fail-open)."""

    key: str
    member: str
    counted: bool = True


# One atomic step per connect. KEYS[1]: the session's sorted set (member: a socket, score: when its
# place expires unless its process refreshes it). ARGV: now, this socket's expiry, its member, the
# cap, the key's own lifetime in seconds. Drops the expired places (a dead process's sockets), then
# adds this one only if there is room. 1: counted; 0: the session is full.
_ACQUIRE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class _LoopSockets:
    """The counted sockets of one event loop (a web process runs one) and its refresher task."""

    def __init__(self) -> None:
        self.open: dict[str, set[str]] = {}  # session's key -> members of this loop's sockets
        self.task: asyncio.Task[None] | None = None
        self.sleeping = False


class SessionSockets:
    """Open sockets per signed-in session, counted in Redis, so that the cap holds across all web
    processes (a session may reach several through a proxy).

    Each session has a sorted set, ``<prefix>:ws-sockets:<hash of the session key>``: a member per
    open socket (a random id), scored with the time its place expires. Connecting is one Lua call
    (drop expired places, add this one if the session has room); closing removes the member. Every
    event loop with counted sockets has one task that pushes their expiry forward, one pipeline for
    all of them every ``ARENA_WS_SOCKET_TTL_S / 3`` seconds, so the places of a process that died
    without closing its sockets expire within ``ARENA_WS_SOCKET_TTL_S``. Calls go through the
    process's pooled client (``arena.streaming.redis_client``): a crowd connecting at once waits for
    its connections rather than opening one per socket.

    If Redis fails while a socket connects, the socket is let in uncounted and a warning logged
    (fail-open): the cap guards against runaway tabs, not an attack that needs Redis down, and a
    socket needs Redis anyway for its live events and snapshot.
    """

    def __init__(self, client: Callable[[], aioredis.Redis] | None = None) -> None:
        self._client = client or redis_client
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSockets] = weakref.WeakKeyDictionary()

    @staticmethod
    def key(session_key: str) -> str:
        """The Redis key of a session's count; the session key itself (a credential) never appears."""
        digest = hashlib.sha256(session_key.encode()).hexdigest()[:32]
        return f"{settings.CHANNEL_LAYERS['default']['CONFIG'].get('prefix', 'arena')}:ws-sockets:{digest}"

    async def acquire(self, session_key: str, limit: int, now: float | None = None) -> Slot | None:
        """A place for one more socket of the session, or None when it already holds ``limit``
        across all web processes."""
        now = time.time() if now is None else now
        ttl = float(settings.ARENA_WS_SOCKET_TTL_S)
        slot = Slot(self.key(session_key), uuid.uuid4().hex)
        try:
            client = self._client()
            added = await client.eval(_ACQUIRE_LUA, 1, slot.key, now, now + ttl, slot.member, limit, _key_ttl(ttl))
        except (RedisError, OSError) as exc:
            logger.warning("could not count a WebSocket of its session (%s); letting it in uncounted", exc)
            return Slot(slot.key, slot.member, counted=False)
        if not added:
            return None
        state = self._state()
        state.open.setdefault(slot.key, set()).add(slot.member)
        if state.task is None or state.task.done():
            state.task = asyncio.get_running_loop().create_task(self._refresh(state))
        return slot

    async def release(self, slot: Slot) -> None:
        """Free the socket's place (its process stops refreshing it even if Redis cannot be told)."""
        if not slot.counted:
            return
        state = self._state()
        members = state.open.get(slot.key)
        if members is not None:
            members.discard(slot.member)
            if not members:
                del state.open[slot.key]
        if not state.open and state.task is not None and state.sleeping:
            state.task.cancel()  # nothing left to refresh; a later socket starts another task
            state.task = None
        try:
            await self._client().zrem(slot.key, slot.member)
        except (RedisError, OSError) as exc:
            logger.warning("could not free a WebSocket's place in its session's count (%s); it expires by itself", exc)

    async def refresh(self, now: float | None = None) -> None:
        """Push the expiry of this loop's counted sockets forward: one pipeline for all of them.
        Only places still in Redis are refreshed (``XX``), so a socket closed meanwhile stays gone."""
        state = self._state()
        if not state.open:
            return
        ttl = float(settings.ARENA_WS_SOCKET_TTL_S)
        expires = (time.time() if now is None else now) + ttl
        pipe = self._client().pipeline(transaction=False)
        for key, members in state.open.items():
            pipe.zadd(key, dict.fromkeys(members, expires), xx=True)
            pipe.expire(key, _key_ttl(ttl))
        await pipe.execute()

    def _state(self) -> _LoopSockets:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopSockets()
        return state

    async def _refresh(self, state: _LoopSockets) -> None:
        while True:
            state.sleeping = True
            try:
                await asyncio.sleep(float(settings.ARENA_WS_SOCKET_TTL_S) / 3)
            finally:
                state.sleeping = False
            if not state.open:
                break
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                logger.warning("could not refresh this process's WebSocket places (%s); retrying", exc)
            if not state.open:
                break
        if state.task is asyncio.current_task():
            state.task = None


def _key_ttl(ttl: float) -> int:
    """A session's sorted set outlives its latest place, so an abandoned one disappears by itself."""
    return math.ceil(ttl) * 2 + 1
