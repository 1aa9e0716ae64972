"""Roles: researchers run debates and read everything; judges see only their assigned debates."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse

RESEARCHER = "researcher"
JUDGE = "judge"


# What researchers may do in the Django admin: view every model of the arena's apps; add and change
# the things their work defines. Never users or groups (auth), and never delete: debates, verdicts
# and exports refer to these rows. Profiles and constitutions a debate used are read-only there too.
RESEARCHER_VIEW_APPS = ("arena", "debaters", "judging")
RESEARCHER_CHANGE_MODELS = (
    ("debaters", "debaterprofile"),
    ("judging", "judgeprofile"),
    ("arena", "question"),
    ("arena", "questionset"),
    ("arena", "constitution"),
    ("judging", "study"),
)


def researcher_permissions() -> Q:
    """The researcher group's permissions, as a filter on ``Permission`` (also used by its data migration)."""
    allowed = Q(content_type__app_label__in=RESEARCHER_VIEW_APPS, codename__startswith="view_")
    for app_label, model in RESEARCHER_CHANGE_MODELS:
        allowed |= Q(
            content_type__app_label=app_label,
            content_type__model=model,
            codename__in=[f"add_{model}", f"change_{model}"],
        )
    return allowed


def ensure_groups() -> None:
    """Create the roles and give researchers their admin permissions (models added later included)."""
    for name in (RESEARCHER, JUDGE):
        Group.objects.get_or_create(name=name)
    researcher = Group.objects.get(name=RESEARCHER)
    researcher.permissions.add(*Permission.objects.filter(researcher_permissions()))


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
