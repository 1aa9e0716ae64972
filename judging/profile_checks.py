"""The profile "Test" button: one short request through a profile's real backend, run by a worker.

A researcher wants to know that a profile works (the server answers, the key is set, the model
loads, the judge gets letter probabilities) before a tournament depends on it. :func:`request_check`
stores a :class:`ProfileCheck` and queues it once committed; :func:`run_check` runs in the worker,
on the worker's event loop, with the backend instance debates use (so a loaded model is reused), and
writes the reply, the timings and any error on the row, which the profile page polls.

The request is the same for every profile: :data:`CHECK_PROMPT`, at most :data:`CHECK_MAX_TOKENS`
new tokens, with the profile's own sampling otherwise. An AI judge profile is also asked for its
next-token probabilities of ``A`` and ``B`` on :data:`CHOICE_PROMPT`, which is what AI verdicts use.
"""

from __future__ import annotations

import logging
import time
from contextlib import aclosing

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from arena.dispatch import enqueue
from debaters.backends import get_backend
from debaters.backends.base import BackendError, BackendSpec, ChatMessage, Delta, Final, GenerateRequest, SamplingParams
from debaters.backends.resilient import ResilientModel
from debaters.models import DebaterProfile
from judging.models import JudgeProfile, ProfileCheck

log = logging.getLogger(__name__)

# Enqueued by name: tasks import services, never the reverse.
TASK_NAME = "judging.tasks.run_profile_check_task"

CHECK_PROMPT = "In one short sentence: why should a debater quote the text word for word?"
CHECK_MAX_TOKENS = 32
CHOICE_PROMPT = "Which number is larger? Reply with the letter only.\nA: 7\nB: 2"
# One stalled request should not keep the page waiting for ever: the check fails with this message.
ITEM_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 900.0


def _spec_snapshot(profile: DebaterProfile | JudgeProfile) -> dict[str, object]:
    snapshot: dict[str, object] = {
        "backend": profile.backend, "model": profile.model, "options": dict(profile.options or {})
    }
    if isinstance(profile, DebaterProfile):
        snapshot["sampling"] = dict(profile.sampling or {})
    return snapshot


def request_check(profile: DebaterProfile | JudgeProfile, created_by: AbstractBaseUser | None = None) -> ProfileCheck:
    """Store a check of ``profile`` and queue it to a worker once the transaction commits."""
    with transaction.atomic():
        check = ProfileCheck.objects.create(
            debater=profile if isinstance(profile, DebaterProfile) else None,
            judge=profile if isinstance(profile, JudgeProfile) else None,
            spec=_spec_snapshot(profile),
            prompt=CHECK_PROMPT,
            created_by=created_by,
        )
        transaction.on_commit(lambda: enqueue(TASK_NAME, check.pk))
    return check


def check_params(snapshot: dict[str, object]) -> SamplingParams:
    """The profile's sampling with at most :data:`CHECK_MAX_TOKENS` new tokens."""
    raw = snapshot.get("sampling") or {}
    params = SamplingParams.from_dict(raw if isinstance(raw, dict) else {})
    return params.replace(max_tokens=min(params.max_tokens, CHECK_MAX_TOKENS))


def _claim(check_id: int) -> ProfileCheck | None:
    # A redelivered task may find its check running (the worker died): run it again; never a done one.
    claimed = ProfileCheck.objects.filter(
        pk=check_id, status__in=[ProfileCheck.Status.QUEUED, ProfileCheck.Status.RUNNING]
    ).update(status=ProfileCheck.Status.RUNNING, started_at=timezone.now())
    return ProfileCheck.objects.get(pk=check_id) if claimed else None


def _finish(check_id: int, **fields: object) -> None:
    ProfileCheck.objects.filter(pk=check_id).update(finished_at=timezone.now(), **fields)


async def run_check(check_id: int) -> str:
    """Run one queued check and store its outcome; returns the final status."""
    check = await sync_to_async(_claim)(check_id)
    if check is None:
        return "not queued"
    spec = check.spec
    results: dict[str, object] = {}
    try:
        params = check_params(spec)
        backend_spec = BackendSpec(
            backend=str(spec["backend"]), model=str(spec["model"]), options=dict(spec.get("options") or {})
        )
        # One try: the researcher wants to see the first failure, not three backoffs later.
        model = ResilientModel(
            get_backend(backend_spec), max_retries=0, timeout_s=ITEM_TIMEOUT_S, ready_timeout_s=READY_TIMEOUT_S
        )
        started = time.perf_counter()
        await model.wait_ready()
        results["ready_s"] = time.perf_counter() - started
        await _generate(model, check.prompt, params, results)
        if check.judge_id is not None:
            probs = await model.choice_probs([ChatMessage(role="user", content=CHOICE_PROMPT)], ["A", "B"])
            results["choice_probs"] = {"A": probs[0], "B": probs[1]}
    except BackendError as exc:
        await sync_to_async(_finish)(check_id, status=ProfileCheck.Status.FAILED, error=exc.message, **results)
        return ProfileCheck.Status.FAILED
    except (ValueError, TypeError) as exc:
        # A stored profile the backend cannot take (bad options or sampling): the researcher fixes it.
        await sync_to_async(_finish)(check_id, status=ProfileCheck.Status.FAILED, error=str(exc), **results)
        return ProfileCheck.Status.FAILED
    except Exception as exc:
        log.exception("profile check %s failed", check_id)
        await sync_to_async(_finish)(
            check_id, status=ProfileCheck.Status.FAILED, error=f"{type(exc).__name__}: {exc}", **results
        )
        return ProfileCheck.Status.FAILED
    await sync_to_async(_finish)(check_id, status=ProfileCheck.Status.OK, **results)
    return ProfileCheck.Status.OK


async def _generate(model: ResilientModel, prompt: str, params: SamplingParams, results: dict[str, object]) -> None:
    """Stream the check's request, filling ``results`` with the reply, token counts and timings."""
    request = GenerateRequest(messages=(ChatMessage(role="user", content=prompt),), params=params)
    parts: list[str] = []
    final: Final | None = None
    sent = time.perf_counter()
    first: float | None = None
    async with aclosing(model.generate(request)) as stream:
        async for item in stream:
            if isinstance(item, Delta) and item.text:
                if first is None:
                    first = time.perf_counter()
                parts.append(item.text)
            elif isinstance(item, Final):
                final = item
    ended = time.perf_counter()
    if final is None:
        raise BackendError("the backend ended the stream without a final result")
    results.update(
        reply=final.text or "".join(parts), prompt_tokens=final.prompt_tokens, completion_tokens=final.completion_tokens
    )
    if first is not None:
        results["first_token_s"] = first - sent
        if final.completion_tokens > 1 and ended > first:
            results["tokens_per_s"] = (final.completion_tokens - 1) / (ended - first)
