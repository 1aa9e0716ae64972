"""Onboarding judges: single-use, expiring invitation links (there is no open sign-up), and
deactivating a judge (their past verdicts stay in the record, flagged).

Only a hash of an invitation's token is stored: the link is shown once, to the researcher who made
it, and a leaked database does not leak usable links.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from arena.roles import JUDGE
from judging.models import Assignment, Invitation, JudgeStatus, Study, StudySlot
from judging.sockets import close_user_sockets


class InvitationError(ValueError):
    """The invitation cannot be used or made; the message says why, for the person at the page."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_invitation(*, created_by: AbstractBaseUser, study: Study | None = None, note: str = "",
                      days: int | None = None) -> tuple[Invitation, str]:
    """Make an invitation; returns it with its token (the only time the token is known)."""
    days = days if days is not None else settings.ARENA_INVITATION_DAYS
    if not 1 <= days <= 365:
        raise InvitationError("an invitation is valid for 1 to 365 days")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        token=token_hash(token), study=study, note=note.strip()[:200], created_by=created_by,
        expires_at=timezone.now() + timedelta(days=days),
    )
    return invitation, token


def open_invitation(token: str) -> Invitation:
    """The invitation behind ``token`` if it can still be used; else InvitationError."""
    invitation = Invitation.objects.select_related("study").filter(token=token_hash(token)).first()
    if invitation is None:
        raise InvitationError("this invitation link is not valid")
    if invitation.used_at is not None:
        raise InvitationError("this invitation was already used; ask the researcher for a new one")
    if invitation.expires_at <= timezone.now():
        raise InvitationError("this invitation has expired; ask the researcher for a new one")
    return invitation


def accept_invitation(token: str, username: str, password: str) -> AbstractBaseUser:
    """Create the judge's account from an invitation, once. The username and password are
    checked by Django's validators; nothing is created when any check fails."""
    username = username.strip()
    if not username:
        raise InvitationError("choose a username")
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError as exc:
        raise InvitationError(" ".join(exc.messages)) from None
    users = get_user_model()
    with transaction.atomic():
        invitation = Invitation.objects.select_for_update().filter(token=token_hash(token)).first()
        if invitation is None:
            raise InvitationError("this invitation link is not valid")
        open_invitation(token)
        if users.objects.filter(username__iexact=username).exists():
            raise InvitationError(f"the username {username!r} is taken; choose another")
        candidate = users(username=username)
        try:
            password_validation.validate_password(password, candidate)
        except ValidationError as exc:
            raise InvitationError(" ".join(exc.messages)) from None
        user = users.objects.create_user(username=username, password=password)
        user.groups.add(Group.objects.get_or_create(name=JUDGE)[0])
        unused = Invitation.objects.filter(pk=invitation.pk, used_at__isnull=True)
        if unused.update(used_at=timezone.now(), used_by=user) != 1:
            raise InvitationError("this invitation was already used; ask the researcher for a new one")
        if invitation.study_id is not None:
            invitation.study.members.add(user)  # the judge now sees the study even when it is members-only
    return user


def deactivate_judge(judge: AbstractBaseUser, note: str = "") -> JudgeStatus:
    """The judge can no longer sign in and their open debate sockets close (``judging.sockets``);
    their leases return to the pool and debates they had not judged leave their queue. Past
    verdicts stay in the record and are flagged."""
    with transaction.atomic():
        users = get_user_model()
        users.objects.filter(pk=judge.pk).update(is_active=False)
        status, _ = JudgeStatus.objects.get_or_create(judge=judge)
        status.deactivated_at = timezone.now()
        if note:
            status.note = note
        status.save()
        held = StudySlot.objects.filter(judge=judge, verdict__isnull=True)
        debates = list(held.values_list("entry__debate_id", flat=True))
        held.update(judge=None, leased_at=None, lease_expires=None)
        Assignment.objects.filter(judge=judge, debate_id__in=debates).exclude(debate__verdicts__judge=judge).delete()
        # Open debate pages stop streaming too: sign-in is checked only when a socket connects.
        judge_id = judge.pk
        transaction.on_commit(lambda: close_user_sockets(judge_id))
    return status


def reactivate_judge(judge: AbstractBaseUser) -> None:
    with transaction.atomic():
        get_user_model().objects.filter(pk=judge.pk).update(is_active=True)
        JudgeStatus.objects.filter(judge=judge).update(deactivated_at=None)


def set_excluded(judge: AbstractBaseUser, excluded: bool) -> JudgeStatus:
    """Exclude a judge's verdicts from analysis and exports (or take them back in)."""
    status, _ = JudgeStatus.objects.get_or_create(judge=judge)
    JudgeStatus.objects.filter(pk=status.pk).update(excluded=excluded)
    status.excluded = excluded
    return status
