"""A judge's page may sit idle for a long time (a slow model, a queued debate) and must keep streaming."""

from __future__ import annotations

import asyncio
import json

import pytest
from arena_test_support import ws_headers
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from arena.asgi import application
from arena.streaming import DebateStream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.asyncio
async def test_it_still_delivers_after_the_socket_sat_idle_longer_than_the_redis_read_timeout(finished_debate, bob) -> None:  # type: ignore[no-untyped-def]
    headers = await sync_to_async(ws_headers)(bob)
    ws = WebsocketCommunicator(application, f"/ws/debates/{finished_debate.pk}/", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    assert json.loads(await ws.receive_from(5))["type"] == "snapshot"
    # Longer than channels-redis' 5 s BZPOPMIN and redis-py's default 5 s socket timeout.
    await asyncio.sleep(7)
    await DebateStream(finished_debate.pk).status("finished")
    message = json.loads(await ws.receive_from(10))
    assert message == {"type": "status", "status": "finished", "detail": ""}
    await ws.disconnect()
