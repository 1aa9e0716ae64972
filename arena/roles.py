"""Roles: researchers run debates and read everything; judges see only their assigned debates."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

RESEARCHER = "researcher"
JUDGE = "judge"


def ensure_groups() -> None:
    for name in (RESEARCHER, JUDGE):
        Group.objects.get_or_create(name=name)


def _in_group(user: AbstractBaseUser | AnonymousUser, name: str) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return bool(user.is_superuser) or user.groups.filter(name=name).exists()  # type: ignore[union-attr]


def is_researcher(user: AbstractBaseUser | AnonymousUser) -> bool:
    return _in_group(user, RESEARCHER)


def is_judge(user: AbstractBaseUser | AnonymousUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return user.groups.filter(name=JUDGE).exists()  # type: ignore[union-attr]


View = Callable[..., HttpResponse]


def researcher_required(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not is_researcher(request.user):
            raise PermissionDenied("researchers only")
        return view(request, *args, **kwargs)

    return wrapper


def judge_required(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not is_judge(request.user):
            raise PermissionDenied("judges only")
        return view(request, *args, **kwargs)

    return wrapper


def roles_context(request: HttpRequest) -> dict[str, bool]:
    user = getattr(request, "user", None)
    if user is None:
        return {"is_researcher": False, "is_judge": False}
    return {"is_researcher": is_researcher(user), "is_judge": is_judge(user)}
