"""The researcher's export page: list, start (the Celery task run in process), progress, downloads,
and who may see any of it."""

from __future__ import annotations

import json
from types import ModuleType

import pytest
from django.test import Client
from django.urls import include, path, reverse
from django.utils import timezone

from judging.models import Export


def _urlconf() -> ModuleType:
    """arena.urls plus the export pages (until the lead includes them there)."""
    import arena.urls

    module = ModuleType("exports_test_urls")
    module.urlpatterns = list(arena.urls.urlpatterns)  # type: ignore[attr-defined]
    if not any(str(getattr(p, "pattern", "")) == "exports/" for p in module.urlpatterns):  # type: ignore[attr-defined]
        module.urlpatterns.append(path("exports/", include("judging.urls_exports")))  # type: ignore[attr-defined]
    return module


URLCONF = _urlconf()


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ROOT_URLCONF = URLCONF
    settings.ARENA_EXPORT_DIR = tmp_path / "exports"


@pytest.fixture
def judged(finished_debate, bob):  # type: ignore[no-untyped-def]
    from judging.models import Assignment
    from judging.services import submit_human_verdict

    assignment = Assignment.objects.get(debate=finished_debate, judge=bob)
    # Bob gives answer 1 (side 0) 70%, whichever order he was shown.
    p_first = 0.7 if assignment.shown_first == 0 else 0.3
    submit_human_verdict(assignment, p_first, 1 - p_first, "Side one quoted well.")
    return finished_debate


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _start(client: Client, django_capture_on_commit_callbacks, **fields: str):  # type: ignore[no-untyped-def]
    data = {"kind": "arguments", "format": "conversational", "file_format": "jsonl", "judge": "any", **fields}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("exports"), data)
    return response, callbacks


@pytest.mark.django_db
def test_a_researcher_starts_an_export_and_downloads_it(alice, judged, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    from judging.tasks import export_task

    client = _client(alice)

    response, callbacks = _start(client, django_capture_on_commit_callbacks, file_format="jsonl", per_verdict="on")

    assert response.status_code == 302
    export = Export.objects.get()
    assert (export.status, export.kind, export.format, export.created_by) == (
        "queued",
        "arguments",
        "conversational",
        alice,
    )
    assert export.filters["per_verdict"] is True
    assert len(callbacks) == 1  # the task is queued once the transaction commits
    page = client.get(reverse("exports"))
    assert page.status_code == 200 and b'data-field="progress"' in page.content

    assert export_task(export.pk) == "finished"  # the task body, run in process

    export.refresh_from_db()
    assert (export.status, export.rows, export.progress) == ("finished", 1, 1.0)
    status = client.get(reverse("export_status", args=[export.pk])).json()
    assert status["status"] == "finished" and status["rows"] == 1
    assert status["download"] == reverse("export_download", args=[export.pk])
    download = client.get(status["download"])
    assert download.status_code == 200
    assert "attachment" in download["Content-Disposition"]
    body = b"".join(download.streaming_content)
    row = json.loads(body.decode().splitlines()[0])
    assert row["debate_id"] == judged.pk and row["chosen"][0]["content"] == "Speech for answer 1."
    card = b"".join(client.get(status["card"]).streaming_content).decode()
    assert "- rows: 1" in card and export.sha256 in card
    listing = client.get(reverse("exports")).content.decode()
    assert reverse("export_download", args=[export.pk]) in listing


@pytest.mark.django_db
def test_a_parquet_export_downloads_as_parquet(alice, judged, django_capture_on_commit_callbacks, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from judging.models import Verdict
    from judging.tasks import export_task

    client = _client(alice)
    _start(client, django_capture_on_commit_callbacks, kind="judgments", format="unpaired", file_format="parquet")
    export = Export.objects.get()

    export_task(export.pk)

    download = client.get(reverse("export_download", args=[export.pk]))
    target = tmp_path / "got.parquet"
    target.write_bytes(b"".join(download.streaming_content))
    table = pq.read_table(target)
    verdict = Verdict.objects.get()
    assert table.num_rows == 1 and table.column("label").to_pylist() == [verdict.correct]
    assert table.column("verdict_id").to_pylist() == [verdict.pk]


@pytest.mark.django_db
def test_a_bad_request_is_explained_and_nothing_is_queued(alice, judged, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    client = _client(alice)

    response, callbacks = _start(client, django_capture_on_commit_callbacks, kind="judgments", format="conversational")
    assert response.status_code == 400
    assert b"judgments are unpaired" in response.content

    response, _ = _start(client, django_capture_on_commit_callbacks, kind="turns")
    assert response.status_code == 400 and b"no best-of-N candidates match" in response.content

    response, _ = _start(client, django_capture_on_commit_callbacks, format="csv")
    assert response.status_code == 400 and b"format:" in response.content
    assert not Export.objects.exists() and not callbacks


@pytest.mark.django_db
def test_a_failing_export_records_its_error(alice, judged) -> None:  # type: ignore[no-untyped-def]
    from judging.models import Verdict
    from judging.tasks import export_task

    export = Export.objects.create(
        kind="arguments", format="conversational", filters={"file_format": "jsonl"}, created_by=alice
    )
    Verdict.objects.all().delete()  # the selection emptied between the click and the worker

    assert export_task(export.pk) == "failed"

    export.refresh_from_db()
    assert export.status == "failed" and "no verdicts match" in export.error
    response = _client(alice).get(reverse("export_download", args=[export.pk]))
    assert response.status_code == 404
    assert _client(alice).get(reverse("export_status", args=[export.pk])).json()["error"] == export.error


@pytest.mark.django_db
def test_a_second_delivery_of_the_task_does_nothing(alice, judged) -> None:  # type: ignore[no-untyped-def]
    from judging.exports import run_export_job

    export = Export.objects.create(kind="arguments", format="conversational", filters={}, created_by=alice)
    Export.objects.filter(pk=export.pk).update(status="running")

    assert run_export_job(export.pk) == "running"
    assert run_export_job(export.pk, redelivered=True) == "finished"


@pytest.mark.django_db
def test_judges_get_403_and_anonymous_visitors_are_sent_to_sign_in(alice, bob, judged) -> None:  # type: ignore[no-untyped-def]
    from judging.tasks import export_task

    export = Export.objects.create(kind="arguments", format="conversational", filters={}, created_by=alice)
    export_task(export.pk)
    urls = [
        reverse("exports"),
        reverse("export_status", args=[export.pk]),
        reverse("export_download", args=[export.pk]),
        reverse("export_card", args=[export.pk]),
    ]
    judge = _client(bob)
    anonymous = Client()
    for url in urls:
        assert judge.get(url).status_code == 403, url
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
    assert judge.post(reverse("exports"), {"kind": "arguments"}).status_code == 403
    assert Export.objects.count() == 1


@pytest.mark.django_db
def test_downloads_cannot_leave_the_export_folder(alice, judged, settings) -> None:  # type: ignore[no-untyped-def]
    from judging.tasks import export_task

    secret = settings.ARENA_EXPORT_DIR.parent / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("do not serve")
    export = Export.objects.create(kind="arguments", format="conversational", filters={}, created_by=alice)
    export_task(export.pk)
    # Whatever the row says, the file is found from the id and fixed names only.
    Export.objects.filter(pk=export.pk).update(path="../secret.txt", filters={"file_format": "../../secret.txt"})
    client = _client(alice)

    assert client.get(reverse("export_download", args=[export.pk])).status_code == 404
    assert client.get("/exports/..%2Fsecret.txt/download/").status_code == 404
    card = client.get(reverse("export_card", args=[export.pk]))
    assert card.status_code == 200 and b"do not serve" not in b"".join(card.streaming_content)


@pytest.mark.django_db
def test_an_unfinished_export_has_no_download(alice) -> None:  # type: ignore[no-untyped-def]
    export = Export.objects.create(
        kind="arguments", format="conversational", filters={}, created_by=alice, progress=0.25
    )
    client = _client(alice)

    assert client.get(reverse("export_download", args=[export.pk])).status_code == 404
    status = client.get(reverse("export_status", args=[export.pk])).json()
    assert status == {
        "id": export.pk, "status": "queued", "progress": 0.25, "rows": 0, "error": "", "download": None, "card": None,
        "card_page": None, "datasets": None,
    }  # fmt: skip
    page = client.get(reverse("exports")).content.decode()
    assert "25%" in page and f'data-status-url="{reverse("export_status", args=[export.pk])}"' in page


def test_the_task_is_registered_with_celery() -> None:
    from arena.celery import app

    app.loader.import_default_modules()
    assert "judging.tasks.export_task" in app.tasks


@pytest.mark.django_db
def test_the_job_stores_its_progress_while_it_runs(alice, bob, charlie, make_debate, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from arena.models import Debate, Turn
    from judging.exports import jobs
    from judging.models import Assignment
    from judging.services import submit_human_verdict

    dave = get_user_model().objects.create_user(username="dave", password="x")
    dave.groups.add(Group.objects.get(name="judge"))
    now = timezone.now()
    # Three judges, one debate each: a judge's second verdict on one story breaks the exposure rules.
    for seed, judge in enumerate((bob, charlie, dave)):
        debate = make_debate(judges=[judge], seed=seed)
        for side in (0, 1):
            Turn.objects.create(
                debate=debate, index=side ^ debate.first_side, round=1, side=side, text=f"Side {side}.", prompt=[],
                prompt_hash="x",
                started_at=now, finished_at=now,
            )  # fmt: skip
        Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED)
        submit_human_verdict(Assignment.objects.get(debate=debate, judge=judge), 0.8, 0.2, "A clear, quoted case.")
    export = Export.objects.create(kind="arguments", format="conversational", filters={}, created_by=alice)
    seen: list[tuple[str, float]] = []
    real = jobs.run_export

    def one_debate_per_chunk(req, out, *, progress, **kw):  # type: ignore[no-untyped-def]
        def spy(done: int, total: int) -> None:
            progress(done, total)
            row = Export.objects.get(pk=export.pk)
            seen.append((row.status, row.progress))

        monkeypatch.setattr(jobs.time, "monotonic", iter(range(0, 1000, 10)).__next__)  # every call "later"
        return real(req, out, progress=spy, chunk=1, **kw)

    monkeypatch.setattr(jobs, "run_export", one_debate_per_chunk)

    assert jobs.run_export_job(export.pk) == "finished"

    assert seen == [("running", pytest.approx(1 / 3)), ("running", pytest.approx(2 / 3)), ("running", 1.0)]


@pytest.mark.django_db  # closing a response signals request_finished, which checks the connections
def test_a_download_is_read_a_block_at_a_time_under_asgi(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Under ASGI Django iterates a response asynchronously. A plain FileResponse then reads the
    whole file before its first byte goes out; the export download reads one block, sends it, and
    reads the next, so an export of hundreds of megabytes never sits in the web process whole."""
    from asgiref.sync import async_to_sync
    from django.http import FileResponse

    from judging.views_exports import ChunkedFileResponse

    size = 3 * ChunkedFileResponse.async_block_size + 123
    path = tmp_path / "verdicts.jsonl"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))

    async def first_block_then_rest(response: FileResponse) -> tuple[int, bytes]:
        parts = aiter(response)
        first = await anext(parts)
        read_when_first_sent = response.file_to_stream.tell()  # type: ignore[union-attr]
        return read_when_first_sent, first + b"".join([part async for part in parts])

    chunked = ChunkedFileResponse(path.open("rb"), as_attachment=True, filename="x.jsonl")
    read, body = async_to_sync(first_block_then_rest)(chunked)
    assert body == path.read_bytes()
    assert read == ChunkedFileResponse.async_block_size
    assert chunked["Content-Length"] == str(size) and "attachment" in chunked["Content-Disposition"]
    chunked.close()
    assert chunked.file_to_stream.closed  # type: ignore[union-attr]

    plain = FileResponse(path.open("rb"))
    read, body = async_to_sync(first_block_then_rest)(plain)
    assert body == path.read_bytes() and read == size  # what the export download did before
    plain.close()

