"""Issue 15: the export form offers what the command does (datasets folder, split, judge ids,
flagged verdicts), and the dataset card is a page and a markdown download."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from judging.models import Export
from tests.judging.test_exports_page import _client, _settings, _start, judged  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def test_the_form_offers_every_option_of_the_command(alice) -> None:  # type: ignore[no-untyped-def]
    from judging.exports import ExportRequest
    from judging.views_exports import ExportForm

    offered = set(ExportForm().fields) | {"datasets"}
    wanted = set(ExportRequest.__dataclass_fields__) - {"since"} | {"since"}
    assert wanted <= offered, wanted - offered
    html = _client(alice).get(reverse("exports")).content.decode()
    for name in ("test_fraction", "datasets", "stable_judge_ids", "include_flagged"):
        assert f'name="{name}"' in html


def test_a_datasets_folder_from_the_page_and_the_card_as_page_and_markdown(alice, judged, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    from judging.tasks import export_task

    client = _client(alice)
    response, _ = _start(client, django_capture_on_commit_callbacks, file_format="parquet", datasets="on", test_fraction="0.5")
    assert response.status_code == 302
    export = Export.objects.get()
    assert export.filters["datasets"] is True and export.filters["test_fraction"] == 0.5
    assert export_task(export.pk) == "finished"
    status = client.get(reverse("export_status", args=[export.pk])).json()
    archive = client.get(status["datasets"])
    assert archive["Content-Disposition"] == f'attachment; filename="export-{export.pk}-datasets.zip"'
    names = zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).namelist()
    assert "datasets/dataset_dict.json" in names and "datasets/README.md" in names
    page = client.get(status["card_page"])
    html = page.content.decode()
    assert page.status_code == 200 and "<h1>" in html and "<li>rows: 1</li>" in html
    assert f'href="{reverse("export_card", args=[export.pk])}" download' in html
    markdown = client.get(status["card"])
    assert markdown["Content-Type"].startswith("text/markdown")
    assert markdown["Content-Disposition"] == f'attachment; filename="export-{export.pk}-README.md"'
    assert b"- rows: 1" in b"".join(markdown.streaming_content)
    listing = client.get(reverse("exports")).content.decode()
    assert reverse("export_datasets", args=[export.pk]) in listing and reverse("export_card_page", args=[export.pk]) in listing


def test_judges_cannot_read_cards_or_datasets(alice, bob, judged) -> None:  # type: ignore[no-untyped-def]
    from judging.tasks import export_task

    export = Export.objects.create(kind="arguments", format="conversational", filters={"datasets": True}, created_by=alice)
    export_task(export.pk)
    judge = _client(bob)
    for name in ("export_card_page", "export_datasets"):
        assert judge.get(reverse(name, args=[export.pk])).status_code == 403
    assert _client(alice).get(reverse("export_datasets", args=[export.pk])).status_code == 200
