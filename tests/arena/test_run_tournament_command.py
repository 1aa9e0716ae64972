"""The run_tournament command: check, inline run with its progress bar, errors, and control by id."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from arena.models import Tournament
from debaters.backends import forget_backends
from debaters.models import DebaterProfile
from judging.models import JudgeProfile, Verdict

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def definition(tmp_path: Path, question) -> Path:  # type: ignore[no-untyped-def]
    forget_backends()
    for name in ("c1", "c2"):
        DebaterProfile.objects.create(name=name, backend="scripted", model=name, options={"text": "Mine <quote>There was a thump.</quote>"})
    JudgeProfile.objects.create(name="cj", backend="scripted", model="j")
    path = tmp_path / "t.yaml"
    path.write_text(
        f"name: cmd\nquestions: {{set: {question.question_set.name}}}\ndebaters: [c1, c2]\njudges: [cj]\n"
        "limits: {rounds: 1, max_tokens: 12, word_limit: 20, context_tokens: 120}\n"
    )
    yield path
    forget_backends()


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("run_tournament", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_check_only_reports_the_size(definition: Path) -> None:
    out = _run(str(definition), "--check")
    assert "2 debaters × 1 questions × 1 protocol(s) = 4 debates" in out
    assert "4 AI verdicts" in out
    assert not Tournament.objects.exists()


def test_inline_runs_the_whole_tournament(definition: Path) -> None:
    out = _run(str(definition), "--inline")
    tournament = Tournament.objects.get(name="cmd")
    assert tournament.status == Tournament.Status.FINISHED
    assert Verdict.objects.filter(debate__tournament=tournament).count() == 4
    assert f"tournament {tournament.pk} (cmd): finished; debates 4 finished" in out
    status = _run("--status", str(tournament.pk))
    assert "finished" in status and "4 AI verdicts" in status
    with pytest.raises(CommandError, match="is finished; cannot make it paused"):
        _run("--pause", str(tournament.pk))


def test_a_bad_definition_lists_its_problems(tmp_path: Path, definition: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(definition.read_text().replace("c2", "nobody").replace("rounds: 1", "rounds: 0"))
    with pytest.raises(CommandError) as info:
        _run(str(bad))
    assert "unknown debater profile 'nobody'" in str(info.value)
    assert "rounds must be between 1 and 10" in str(info.value)
    with pytest.raises(CommandError, match="cannot read"):
        _run(str(tmp_path / "missing.yaml"))
    with pytest.raises(CommandError, match="no such tournament"):
        _run("--status", "999999")
    assert "debaters:" in _run("--example")
