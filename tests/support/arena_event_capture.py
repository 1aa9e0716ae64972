"""Capture what a debate's channel group receives while a callable runs (tests only)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from arena.streaming import group_name


def collect_events(debate_id: int, run: Callable[[], object], quiet_s: float = 1.0) -> list[dict]:
    """Join the debate's group, call ``run``, then drain until the group is quiet for ``quiet_s``.

    All on one event loop: the pub/sub channel layer subscribes per loop, so a channel made on one
    loop hears nothing once that loop is gone. ``run`` runs on another thread meanwhile.
    """
    layer = get_channel_layer()

    async def collect() -> list[dict]:
        channel = await layer.new_channel()
        await layer.group_add(group_name(debate_id), channel)
        # A plain executor thread, which inherits no context: the runner's sync_to_async calls on
        # the worker loop must not be routed back to this (blocked) thread.
        await asyncio.get_running_loop().run_in_executor(None, run)
        out = []
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), quiet_s)
            except asyncio.TimeoutError:
                break
            out.append(json.loads(message["json"]))
        await layer.group_discard(group_name(debate_id), channel)
        return out

    return async_to_sync(collect)()


def reconstruct(events: list[dict]) -> dict[int, str]:
    """Each turn's text as a client builds it from turn_start, delta and turn_reset events."""
    texts: dict[int, str] = {}
    for event in events:
        if event["type"] == "turn_start":
            texts[event["turn"]] = ""
        elif event["type"] == "delta":
            texts[event["turn"]] += event["text"]
        elif event["type"] == "turn_reset":
            texts[event["turn"]] = ""
    return texts
