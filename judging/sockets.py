"""Closing the open debate sockets of a judge who is deactivated.

Signing in is checked once, when a socket connects; a judge deactivated while a debate page is
open would otherwise keep receiving its stream. So every debate socket also joins its user's group
(:func:`user_group`, with :func:`follow_account`), and :func:`close_user_sockets` — called by
``judging.invitations.deactivate_judge`` once its transaction commits — sends that group one
``account.closed`` message. The consumer closes with :data:`CLOSE_DEACTIVATED` on it, in whichever
web process holds the socket, because the message goes through the channel layer.

A socket that connects while the deactivation commits could join the group just after the message
went out; :func:`follow_account` therefore re-reads ``is_active`` *after* joining, so one of the
two always sees the other.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.contrib.auth import get_user_model

# The close code a page gets when its user may no longer be here (the consumer's "forbidden").
CLOSE_DEACTIVATED = 4403
CLOSED_EVENT = "account.closed"


def user_group(user_id: int) -> str:
    """The channel-layer group of one user's debate sockets."""
    return f"user-{user_id}"


async def follow_account(layer: BaseChannelLayer, channel_name: str, user_id: int) -> bool:
    """Join ``channel_name`` to the user's group; False when the account is no longer active (the
    socket should close). Joins first, then reads, so a deactivation is never missed."""
    await layer.group_add(user_group(user_id), channel_name)
    return await sync_to_async(_is_active)(user_id)


async def unfollow_account(layer: BaseChannelLayer, channel_name: str, user_id: int) -> None:
    await layer.group_discard(user_group(user_id), channel_name)


def close_user_sockets(user_id: int) -> None:
    """Tell every open debate socket of ``user_id`` to close (from synchronous code, e.g. an action
    after its commit). Sockets that never joined, or that are gone, are not affected."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(user_group(user_id), {"type": CLOSED_EVENT})


def _is_active(user_id: int) -> bool:
    return get_user_model().objects.filter(pk=user_id, is_active=True).exists()
