"""Take back debates whose worker died, so that nothing stays stuck until a restart.

A worker renews the lease of every debate it runs every third of ``ARENA_LEASE_SECONDS``. A lease
that has expired therefore means its worker is gone (killed, out of memory, its machine lost) or
stalled past any reason. The broker would redeliver the task only after ``CELERY_VISIBILITY_TIMEOUT``
(an hour in production) and the embedded Redis may have lost it altogether, so every worker runs
:func:`requeue_expired` every ``ARENA_SWEEP_SECONDS`` (a timer thread, arena/tasks.py) and queues
what it took back. The takeover is a conditional UPDATE per debate: when several workers sweep at
once, each debate goes to exactly one of them, and a worker that renews its lease in between keeps
the debate. A worker elsewhere that was merely slow loses it and cannot commit another turn
(turns are committed only under the lease), so no speech is repeated; a worker of this host is
judged by whether its process lives (:func:`local_owner_alive`).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from arena.models import Debate, Tournament


@dataclass
class Requeued:
    """What one sweep took back: debates of their own, and tournament debates by running tournament."""

    debates: list[int] = field(default_factory=list)
    tournament_debates: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))

    @property
    def all_ids(self) -> list[int]:
        return self.debates + [d for ids in self.tournament_debates.values() for d in ids]


# Tells this process's leases from a dead predecessor's with the same pid (a container's worker is
# pid 1 again after a restart).
PROCESS_TOKEN = uuid.uuid4().hex[:8]


def lease_owner() -> str:
    """A new lease owner for work this process runs: ``host:pid:token``."""
    return f"{socket.gethostname()}:{os.getpid()}:{PROCESS_TOKEN}{uuid.uuid4().hex[:8]}"


def local_owner_alive(owner: str, host: str | None = None) -> bool | None:
    """Whether a lease owner (``host:pid:token``, :func:`lease_owner`) that is a process of this host
    is still running; None for an owner elsewhere, which only its lease can speak for.

    A dead local owner's lease is void before it expires: ``serve`` restarts a killed worker within
    seconds and takes its debates back at once. A live local owner keeps its debates even past its
    lease: on a starved machine a busy worker renews late, and taking its debates would only make
    it throw its work away. (A reused pid only makes a dead owner look alive: its lease then
    keeps its debates until that process ends; pids are not reused that fast.)
    """
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != (host or socket.gethostname()) or not parts[1].isdigit():
        return None
    if int(parts[1]) == os.getpid():
        return parts[2].startswith(PROCESS_TOKEN)
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def requeue_expired(now: datetime | None = None) -> Requeued:
    """Put every running debate whose owner was a process of this host that is gone, or whose owner
    elsewhere let its lease expire before ``now``, back to ``queued``.

    Debates of a paused or stopped tournament go back to ``queued`` too but are not returned: their
    tournament's resume hands them out again.
    """
    now = now or timezone.now()
    found = Requeued()
    local = f"{socket.gethostname()}:"
    candidates = Debate.objects.filter(
        Q(lease_expires__lt=now) | Q(lease_owner__startswith=local), status=Debate.Status.RUNNING
    ).values_list("pk", "lease_owner", "lease_expires", "tournament_id", "tournament__status")
    for debate_id, owner, expires, tournament_id, tournament_status in candidates:
        alive = local_owner_alive(owner)
        expired = expires is not None and expires < now
        if alive or (alive is None and not expired):
            continue
        # Unchanged since the read: a debate renewed or taken over in between is left alone.
        taken = Debate.objects.filter(
            pk=debate_id, status=Debate.Status.RUNNING, lease_owner=owner, lease_expires=expires
        ).update(
            status=Debate.Status.QUEUED, lease_owner="", lease_expires=None
        )
        if not taken:
            continue
        if tournament_id is None:
            found.debates.append(debate_id)
        elif tournament_status == Tournament.Status.RUNNING:
            found.tournament_debates[tournament_id].append(debate_id)
    return found
