"""Debater profiles get versions: a profile a debate used is never edited; an edit makes the next version."""

from django.db import migrations, models


def start_lineages(apps, schema_editor):  # type: ignore[no-untyped-def]
    DebaterProfile = apps.get_model("debaters", "DebaterProfile")
    for profile in DebaterProfile.objects.filter(lineage=""):
        profile.lineage = profile.name
        profile.save(update_fields=["lineage"])


class Migration(migrations.Migration):

    dependencies = [
        ("debaters", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="debaterprofile",
            name="lineage",
            field=models.SlugField(
                blank=True, help_text="The name of the profile's first version; versions share it.", max_length=100
            ),
        ),
        migrations.AddField(
            model_name="debaterprofile",
            name="version",
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.RunPython(start_lineages, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="debaterprofile",
            constraint=models.UniqueConstraint(fields=("lineage", "version"), name="unique_debater_profile_version"),
        ),
    ]
