"""AI judge profiles get versions (as debater profiles do), and profiles get "Test" checks run by a worker."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def start_lineages(apps, schema_editor):  # type: ignore[no-untyped-def]
    JudgeProfile = apps.get_model("judging", "JudgeProfile")
    for profile in JudgeProfile.objects.filter(lineage=""):
        profile.lineage = profile.name
        profile.save(update_fields=["lineage"])


class Migration(migrations.Migration):

    dependencies = [
        ("debaters", "0002_profile_versions"),
        ("judging", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="judgeprofile",
            name="lineage",
            field=models.SlugField(
                blank=True, help_text="The name of the profile's first version; versions share it.", max_length=100
            ),
        ),
        migrations.AddField(
            model_name="judgeprofile",
            name="version",
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.RunPython(start_lineages, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="judgeprofile",
            constraint=models.UniqueConstraint(fields=("lineage", "version"), name="unique_judge_profile_version"),
        ),
        migrations.CreateModel(
            name="ProfileCheck",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("spec", models.JSONField(default=dict)),
                (
                    "status",
                    models.CharField(
                        choices=[("queued", "Queued"), ("running", "Running"), ("ok", "Ok"), ("failed", "Failed")],
                        default="queued",
                        max_length=10,
                    ),
                ),
                ("prompt", models.TextField()),
                ("reply", models.TextField(blank=True)),
                ("error", models.TextField(blank=True)),
                (
                    "ready_s",
                    models.FloatField(
                        blank=True, help_text="Seconds until the backend could serve (a model loading).", null=True
                    ),
                ),
                ("first_token_s", models.FloatField(blank=True, null=True)),
                ("tokens_per_s", models.FloatField(blank=True, null=True)),
                ("prompt_tokens", models.PositiveIntegerField(blank=True, null=True)),
                ("completion_tokens", models.PositiveIntegerField(blank=True, null=True)),
                (
                    "choice_probs",
                    models.JSONField(blank=True, help_text="AI judges: P(A), P(B) as the next token.", null=True),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "debater",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="checks",
                        to="debaters.debaterprofile",
                    ),
                ),
                (
                    "judge",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="checks",
                        to="judging.judgeprofile",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("debater__isnull", False), ("judge__isnull", True))
                        | models.Q(("debater__isnull", True), ("judge__isnull", False)),
                        name="profile_check_of_one_profile",
                    )
                ],
            },
        ),
    ]
