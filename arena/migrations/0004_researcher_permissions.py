"""The researcher group gets the admin permissions its work needs (see arena.roles.researcher_permissions).

Permissions are normally created after all migrations ran; they are created here first so a fresh
database gets its grants in the same ``migrate``. ``setup_demo`` (arena.roles.ensure_groups) grants
the same set again, which covers models added after this migration.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from arena.roles import RESEARCHER, researcher_permissions


def grant(apps, schema_editor):  # type: ignore[no-untyped-def]
    for config in apps.get_app_configs():
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    researcher, _ = Group.objects.get_or_create(name=RESEARCHER)
    researcher.permissions.add(*Permission.objects.filter(researcher_permissions()))


def revoke(apps, schema_editor):  # type: ignore[no-untyped-def]
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for researcher in Group.objects.filter(name=RESEARCHER):
        researcher.permissions.remove(*Permission.objects.filter(researcher_permissions()))


class Migration(migrations.Migration):

    dependencies = [
        ("arena", "0003_question_identity_and_debate_question_hash"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("debaters", "0002_profile_versions"),
        ("judging", "0003_studies_invitations_judge_status"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
