"""`manage.py create_judges`: judge accounts in bulk, assigned to a debate, with signed-in sessions
for a load test."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from arena.roles import is_judge
from judging.models import Assignment

pytestmark = pytest.mark.django_db


def test_it_creates_judges_assigns_them_and_writes_working_sessions(finished_debate, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "sessions"

    call_command("create_judges", "--count", "3", "--prefix", "crowd", "--debate", str(finished_debate.pk), "--sessions-out", str(out))

    users = list(get_user_model().objects.filter(username__startswith="crowd").order_by("username"))
    assert [u.username for u in users] == ["crowd0001", "crowd0002", "crowd0003"]
    assert all(is_judge(u) and not u.has_usable_password() for u in users)
    assert Assignment.objects.filter(debate=finished_debate, judge__in=users).count() == 3
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    username, session = out.read_text().splitlines()[0].split()
    client = Client()
    client.cookies["sessionid"] = session
    page = client.get(f"/judge/debates/{finished_debate.pk}/")
    assert page.status_code == 200 and page.context["user"].username == username


def test_it_reuses_existing_accounts_and_refuses_a_debate_that_does_not_exist(finished_debate) -> None:  # type: ignore[no-untyped-def]
    call_command("create_judges", "--count", "2", "--prefix", "crowd")
    call_command("create_judges", "--count", "3", "--prefix", "crowd")

    assert get_user_model().objects.filter(username__startswith="crowd").count() == 3
    with pytest.raises(CommandError, match="no debate"):
        call_command("create_judges", "--count", "1", "--prefix", "crowd", "--debate", str(finished_debate.pk + 999))
