"""Deactivating a judge closes their open debate sockets (``judging.sockets``), against the real
ASGI application and the real Redis channel layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import connections, transaction
from django.test import Client

from arena.asgi import application
from arena.models import Debate
from judging import invitations
from judging.sockets import CLOSE_DEACTIVATED, follow_account, user_group

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio, pytest.mark.usefixtures("fast_passwords")]

ORIGIN = (b"origin", b"http://127.0.0.1")
TIMEOUT = 5


@pytest.fixture(autouse=True)
def _close_thread_connections() -> Iterator[None]:
    """sync_to_async runs the ORM on a worker thread; close its connection so the flush is not blocked."""
    yield
    async_to_sync(sync_to_async(connections.close_all))()


async def _open(debate_id: int, user: User) -> WebsocketCommunicator:
    def _cookie() -> str:
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    cookie = f"sessionid={await sync_to_async(_cookie)()}".encode()
    comm = WebsocketCommunicator(application, f"/ws/debates/{debate_id}/", headers=[ORIGIN, (b"cookie", cookie)])
    ok, code = await comm.connect(timeout=TIMEOUT)
    assert ok, f"refused with {code}"
    snapshot = await comm.receive_json_from(timeout=TIMEOUT)
    assert snapshot["type"] == "snapshot"
    return comm


async def test_deactivating_a_judge_closes_their_open_debate_socket(
    alice: User, bob: User, finished_debate: Debate
) -> None:
    judge = await _open(finished_debate.pk, bob)
    researcher = await _open(finished_debate.pk, alice)

    await sync_to_async(invitations.deactivate_judge)(bob, "left the study")

    closed = await judge.receive_output(timeout=TIMEOUT)
    assert closed == {"type": "websocket.close", "code": CLOSE_DEACTIVATED}
    # Only bob's sockets: the researcher on the same debate keeps streaming.
    await researcher.send_json_to({"type": "ping"})
    assert await researcher.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await researcher.disconnect()


async def test_a_deactivation_rolled_back_closes_nothing(bob: User, finished_debate: Debate) -> None:
    judge = await _open(finished_debate.pk, bob)

    def _deactivate_then_roll_back() -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            invitations.deactivate_judge(bob)
            raise RuntimeError("the researcher's request failed later")

    await sync_to_async(_deactivate_then_roll_back)()
    await judge.send_json_to({"type": "ping"})
    assert await judge.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await judge.disconnect()


async def test_a_socket_joining_as_the_account_is_switched_off_is_refused(bob: User) -> None:
    """The re-read after joining the group: a deactivation that committed between the sign-in
    check and the join is not missed."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    assert await follow_account(layer, channel, bob.pk)
    await sync_to_async(User.objects.filter(pk=bob.pk).update)(is_active=False)
    assert not await follow_account(layer, channel, bob.pk)
    await layer.group_discard(user_group(bob.pk), channel)
