"""Abuse limits (arena/ratelimit.py): sign-in throttling, per-user POST limits, and the WebSocket's
frame, snapshot and per-session socket limits. Counters are real, in the test Redis."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
from arena_test_support import PASSWORD, signed_in, sockets_of_a_dead_process
from django.conf import settings
from django.core.cache import caches
from django.test import Client
from redis import asyncio as aioredis

from arena import ratelimit
from judging.models import Verdict

REASON = "The quoted passage decides it for the first answer."


@pytest.fixture(autouse=True)
def _fresh_counters(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Only this test run's limit keys (the Redis database is shared with the run's other tests)."""

    def forget() -> None:
        client = caches["limits"]._cache.get_client(write=True)  # the raw redis-py client
        prefix = settings.CACHES["limits"]["KEY_PREFIX"]
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    forget()
    yield
    forget()


def _login(client: Client, username: str, password: str):  # type: ignore[no-untyped-def]
    return client.post("/accounts/login/", {"username": username, "password": password})


# ----- Sign-in -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_locks_a_username_and_address_pair_after_repeated_failures(bob, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_LOGIN_FAILURES = 3
    attacker = Client(REMOTE_ADDR="203.0.113.9")

    answers = [_login(attacker, "bob", "wrong").status_code for _ in range(3)]
    locked = _login(attacker, "bob", PASSWORD)

    assert answers == [200, 200, 200]  # the form again, with its error
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) > 0
    assert b"Too many failed sign-ins" in locked.content
    assert "_auth_user_id" not in attacker.session


@pytest.mark.django_db
def test_it_lets_the_real_judge_in_from_elsewhere_while_an_attacker_is_locked(bob, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_LOGIN_FAILURES = 3
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(5):
        _login(attacker, "bob", "wrong")

    judge = Client(REMOTE_ADDR="198.51.100.7")
    response = _login(judge, "bob", PASSWORD)

    assert response.status_code == 302
    assert judge.session["_auth_user_id"] == str(bob.pk)


@pytest.mark.django_db
def test_it_ends_a_lockout_after_its_time_however_often_it_is_tried(bob, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_LOGIN_FAILURES = 2
    settings.ARENA_LOGIN_LOCKOUT_S = 300
    now = time.time()
    ratelimit.record_login_failure("bob", "203.0.113.9", now)
    ratelimit.record_login_failure("bob", "203.0.113.9", now)
    assert ratelimit.login_refusal("bob", "203.0.113.9", now + 10) is not None

    # Tries during the lockout are refused before they are counted, so they cannot extend it.
    assert ratelimit.login_refusal("bob", "203.0.113.9", now + 299) is not None
    assert ratelimit.login_refusal("bob", "203.0.113.9", now + 301) is None


@pytest.mark.django_db
def test_it_counts_failures_per_pair_and_clears_them_on_success(bob, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_LOGIN_FAILURES = 3
    client = Client(REMOTE_ADDR="192.0.2.1")
    _login(client, "bob", "wrong")
    _login(client, "bob", "wrong")
    assert _login(client, "bob", PASSWORD).status_code == 302
    client.logout()

    # The success cleared the two failures: two more do not lock.
    _login(client, "bob", "wrong")
    _login(client, "bob", "wrong")
    assert _login(client, "bob", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_it_refuses_an_address_that_sprays_many_usernames(bob, charlie, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_LOGIN_IP_FAILURES = 4
    sprayer = Client(REMOTE_ADDR="203.0.113.50")
    for name in ("ann", "ben", "cat", "dan"):
        assert _login(sprayer, name, "wrong").status_code == 200

    assert _login(sprayer, "charlie", PASSWORD).status_code == 429
    assert _login(Client(REMOTE_ADDR="203.0.113.51"), "charlie", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_it_throttles_the_admin_sign_in_too(alice, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_LOGIN_FAILURES = 2
    client = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(2):
        client.post("/admin/login/", {"username": "alice", "password": "wrong"})

    assert client.post("/admin/login/", {"username": "alice", "password": PASSWORD}).status_code == 429


# ----- POSTs -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_limits_verdict_posts_per_user_and_keeps_the_first_verdict(finished_debate, bob, charlie, settings) -> None:  # type: ignore[no-untyped-def]
    from arena import services

    settings.ARENA_POST_LIMITS = {**settings.ARENA_POST_LIMITS, "verdict": 3}
    services.assign_judge(finished_debate, charlie)
    client = signed_in(bob)
    url = f"/judge/debates/{finished_debate.pk}/"
    codes = [client.post(url, {"p_first": "0.8", "p_second": "0.2", "reason": REASON}).status_code for _ in range(4)]

    assert codes[0] == 302 and 429 not in codes[1:3]  # stored; then "already judged"
    assert codes[3] == 429
    assert Verdict.objects.filter(debate=finished_debate, judge=bob).count() == 1
    # Another judge has a budget of their own.
    other = signed_in(charlie).post(url, {"p_first": "0.3", "p_second": "0.7", "reason": REASON})
    assert other.status_code == 302
    # Reading the page is never limited.
    assert client.get(url).status_code == 200


@pytest.mark.django_db
def test_it_counts_questions_apart_from_verdicts(finished_debate, bob, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_POST_LIMITS = {**settings.ARENA_POST_LIMITS, "question": 1}
    client = signed_in(bob)
    url = f"/judge/debates/{finished_debate.pk}/"

    client.post(url, {"action": "question", "question": "Why the moon?"})
    refused = client.post(url, {"action": "question", "question": "And the sun?"})
    verdict = client.post(url, {"p_first": "0.8", "p_second": "0.2", "reason": REASON})

    assert refused.status_code == 429
    assert verdict.status_code == 302


@pytest.mark.django_db
def test_it_limits_invitations_per_researcher(alice, settings) -> None:  # type: ignore[no-untyped-def]
    from django.urls import reverse

    from judging.models import Invitation

    settings.ARENA_POST_LIMITS = {**settings.ARENA_POST_LIMITS, "invitation": 2}
    client = signed_in(alice)
    url = reverse("judges_page")

    answers = [client.post(url, {"action": "invite", "note": f"judge {i}", "days": "7"}) for i in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2]["Retry-After"]
    assert Invitation.objects.count() == 2


def test_every_request_of_the_process_counts_through_one_cache_and_its_pool() -> None:
    """``caches[...]`` is per asyncio context, which under ASGI is per request: a pool (and a new
    Redis connection) per POST. The limits share one, whatever the thread or context."""
    seen = []

    async def in_a_context() -> None:
        seen.append(ratelimit._cache())

    asyncio.run(in_a_context())
    asyncio.run(in_a_context())
    worker = threading.Thread(target=lambda: seen.append(ratelimit._cache()))
    worker.start()
    worker.join()

    assert len({id(cache) for cache in seen}) == 1


def test_a_window_count_is_one_atomic_step_that_expires_with_its_window() -> None:
    key = f"test-count:{uuid.uuid4().hex}"
    now = time.time()

    counts = [ratelimit._count(key, 60, now) for _ in range(3)]

    assert counts == [1, 2, 3]
    full = f"{key}:{ratelimit._window(60, now)}"
    cache = ratelimit._cache()
    assert cache.get(full) == 3  # a plain integer, as the cache API reads it (the sign-in checks do)
    assert 0 < cache._cache.get_client(write=True).ttl(cache.make_and_validate_key(full)) <= 65


# ----- WebSocket counters ------------------------------------------------------------------------


def test_it_allows_a_connection_its_frames_a_minute_and_then_no_more() -> None:
    counter = ratelimit.WindowCounter(3)

    assert [counter.allow(100.0 + i) for i in range(4)] == [True, True, True, False]
    assert counter.allow(161.0)  # a new minute


# ----- Sockets per session, shared by every web process (Redis) -----------------------------------


@pytest_asyncio.fixture
async def session_keys() -> AsyncIterator[Callable[[], str]]:
    """Fresh session keys; their counts are removed from Redis after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(uuid.uuid4().hex)
        return made[-1]

    yield make
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    for key in made:
        await client.delete(ratelimit.SessionSockets.key(key))
    await client.aclose()


@pytest_asyncio.fixture
async def other_client() -> AsyncIterator[aioredis.Redis]:
    """A Redis client of its own, as another web process has."""
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    yield client
    await client.aclose()


@pytest.mark.asyncio
async def test_it_caps_the_sockets_of_one_session_and_frees_a_place_on_close(session_keys) -> None:  # type: ignore[no-untyped-def]
    sockets = ratelimit.SessionSockets()
    s1, s2 = session_keys(), session_keys()

    first, second = await sockets.acquire(s1, 2), await sockets.acquire(s1, 2)
    assert first is not None and second is not None
    assert await sockets.acquire(s1, 2) is None
    other = await sockets.acquire(s2, 2)
    assert other is not None
    await sockets.release(first)
    again = await sockets.acquire(s1, 2)
    assert again is not None
    for slot in (second, other, again):
        await sockets.release(slot)


@pytest.mark.asyncio
async def test_the_cap_holds_across_web_processes(session_keys, other_client) -> None:  # type: ignore[no-untyped-def]
    here = ratelimit.SessionSockets()
    there = ratelimit.SessionSockets(client=lambda: other_client)  # counted apart, same Redis
    session = session_keys()

    mine = [await here.acquire(session, 3) for _ in range(2)]
    theirs = await there.acquire(session, 3)
    assert None not in mine and theirs is not None
    assert await there.acquire(session, 3) is None
    assert await here.acquire(session, 3) is None

    await there.release(theirs)  # a socket closed in the other process frees a place here
    last = await here.acquire(session, 3)
    assert last is not None
    assert await there.acquire(session, 3) is None
    for slot in [*mine, last]:
        await here.release(slot)
    assert await other_client.zcard(ratelimit.SessionSockets.key(session)) == 0


@pytest.mark.asyncio
async def test_the_places_of_a_process_that_died_expire_after_the_ttl(session_keys, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_WS_SOCKET_TTL_S = 3
    session = session_keys()
    sockets = ratelimit.SessionSockets()

    assert await asyncio.to_thread(sockets_of_a_dead_process, session, 2, 2) == 2
    assert await sockets.acquire(session, 2) is None  # its places still count...
    await asyncio.sleep(3.3)
    slot = await sockets.acquire(session, 2)  # ...until they expire, unrefreshed
    assert slot is not None
    await sockets.release(slot)


@pytest.mark.asyncio
async def test_a_live_process_keeps_its_places_past_the_ttl_and_stops_refreshing_when_empty(  # type: ignore[no-untyped-def]
    session_keys, other_client, settings
) -> None:
    # The least TTL the settings allow: refreshes every second, so a loop stalled for up to about
    # two seconds on a loaded machine still keeps its places.
    settings.ARENA_WS_SOCKET_TTL_S = 3
    here = ratelimit.SessionSockets()
    there = ratelimit.SessionSockets(client=lambda: other_client)
    session = session_keys()
    slots = [await here.acquire(session, 2) for _ in range(2)]
    assert None not in slots

    await asyncio.sleep(6.5)  # past twice the TTL: only the refreshes keep the places
    assert await there.acquire(session, 2) is None
    key = ratelimit.SessionSockets.key(session)
    assert await other_client.ttl(key) > 0  # the set expires by itself once nobody refreshes it

    state = here._state()
    assert state.task is not None and not state.task.done()
    refresher = state.task
    for slot in slots:
        await here.release(slot)
    for _ in range(100):  # cancelled at once when asleep, else it ends after the refresh in flight
        if refresher.done():
            break
        await asyncio.sleep(0.01)
    assert state.task is None and refresher.done()  # one task per loop, gone with its last socket
    assert await there.acquire(session, 2) is not None


@pytest.mark.asyncio
async def test_it_lets_a_socket_in_uncounted_when_redis_cannot_be_reached(session_keys, caplog) -> None:  # type: ignore[no-untyped-def]
    unreachable = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    sockets = ratelimit.SessionSockets(client=lambda: unreachable)
    session = session_keys()

    with caplog.at_level(logging.WARNING, logger="arena.ratelimit"):
        slots = [await sockets.acquire(session, 1) for _ in range(2)]
    assert all(slot is not None and not slot.counted for slot in slots)  # fail-open, over the cap
    assert "letting it in uncounted" in caplog.text
    for slot in slots:
        await sockets.release(slot)  # nothing to free, and no error
    assert sockets._state().task is None
    await unreachable.aclose()


@pytest.mark.asyncio
async def test_a_crowd_connecting_at_once_shares_the_pooled_connections(session_keys) -> None:  # type: ignore[no-untyped-def]
    name = f"crowd-{uuid.uuid4().hex[:8]}"  # the connections made are counted by Redis itself
    pool = aioredis.BlockingConnectionPool.from_url(settings.REDIS_URL, max_connections=4, timeout=30, client_name=name)
    client = aioredis.Redis(connection_pool=pool)
    sockets = ratelimit.SessionSockets(client=lambda: client)
    session = session_keys()

    slots = await asyncio.gather(*(sockets.acquire(session, 150) for _ in range(200)))
    assert sum(slot is not None for slot in slots) == 150  # atomic: never more than the cap
    opened = [c for c in await client.client_list() if c.get("name") == name]
    assert 1 <= len(opened) <= 4
    await asyncio.gather(*(sockets.release(slot) for slot in slots if slot is not None))
    assert await client.zcard(ratelimit.SessionSockets.key(session)) == 0
    await client.aclose()


def test_the_count_is_keyed_by_a_hash_of_the_session_under_the_app_prefix() -> None:
    key = ratelimit.SessionSockets.key("secret-session-key")

    assert key.startswith(f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}:ws-sockets:")
    assert "secret-session-key" not in key


def test_every_limit_is_documented_in_env_example() -> None:
    text = (settings.BASE_DIR / ".env.example").read_text()
    for name in (
        "ARENA_LOGIN_FAILURES", "ARENA_LOGIN_WINDOW_S", "ARENA_LOGIN_LOCKOUT_S", "ARENA_LOGIN_IP_FAILURES",
        "ARENA_VERDICT_POSTS_PER_MINUTE", "ARENA_QUESTION_POSTS_PER_MINUTE", "ARENA_INVITATION_POSTS_PER_MINUTE",
        "ARENA_WS_FRAMES_PER_MINUTE", "ARENA_WS_SNAPSHOTS_PER_MINUTE", "ARENA_WS_SOCKETS_PER_SESSION",
        "ARENA_WS_SOCKET_TTL_S", "ARENA_CHANNEL_LAYER", "ARENA_REDIS_MAX_CONNECTIONS", "ARENA_SWEEP_SECONDS",
        "ARENA_WEB_THREADS",
    ):
        assert f"\n{name}=" in text, name
