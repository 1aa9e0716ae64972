"""Capture what a debate's channel group receives while a callable runs (tests only)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from arena.streaming import group_name


def collect_events(debate_id: int, run: Callable[[], object], quiet_s: float = 1.0) -> list[dict]:
    """Join the debate's group, call ``run``, then drain until the group is quiet for ``quiet_s``."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group_name(debate_id), channel)
    run()

    async def drain() -> list[dict]:
        out = []
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), quiet_s)
            except asyncio.TimeoutError:
                return out
            out.append(message["event"])

    events = async_to_sync(drain)()
    async_to_sync(layer.group_discard)(group_name(debate_id), channel)
    return events


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
