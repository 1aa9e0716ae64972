from collections.abc import Sequence

from django.contrib import admin
from django.http import HttpRequest

from arena import profiles
from arena.models import Candidate, Constitution, Debate, JudgeQuestion, Question, QuestionSet, Revision, Tournament, Turn
from debaters.models import DebaterProfile


@admin.register(QuestionSet)
class QuestionSetAdmin(admin.ModelAdmin):
    list_display = ("name", "licence", "created_at")
    search_fields = ("name",)


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = ("external_id", "question", "source_title", "question_set")
    list_filter = ("question_set",)
    search_fields = ("external_id", "question", "source_title", "fingerprint", "source_hash")

    def get_readonly_fields(self, request: HttpRequest, obj: Question | None = None) -> Sequence[str]:
        # source_hash/fingerprint are computed on save (arena.identity). A question that debates
        # use is what their turns and verdicts refer to: freeze its content (manage.py check_record).
        if obj is not None and obj.debates.exists():
            return ("question", "answers", "correct_index", "source_title", "source_text", "source_hash", "fingerprint")
        return ("source_hash", "fingerprint")


PROFILE_FIELDS_FROZEN_WHEN_USED = (
    "name", "backend", "model", "options", "sampling", "context_tokens", "speech_style", "lineage", "version",
)


@admin.register(DebaterProfile)
class DebaterProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "lineage", "version", "backend", "model", "speech_style", "context_tokens", "created_at")
    search_fields = ("name", "model")

    def get_readonly_fields(self, request: HttpRequest, obj: DebaterProfile | None = None) -> Sequence[str]:
        # A profile a debate used is a record of who argued: freeze it (edits make a new version).
        if obj is not None and profiles.is_used(obj):
            return PROFILE_FIELDS_FROZEN_WHEN_USED
        return ("lineage", "version")


@admin.register(Constitution)
class ConstitutionAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Constitution | None = None) -> Sequence[str]:
        # A version a debate used is a record of what the debaters were told: freeze it.
        if obj is not None and obj.is_used():
            return ("name", "version", "principles", "rules", "preamble", "created_by")
        return ()


class TurnInline(admin.TabularInline):
    model = Turn
    extra = 0
    fields = ("index", "round", "side", "text", "completion_tokens", "finish_reason")
    readonly_fields = fields
    can_delete = False


@admin.register(Debate)
class DebateAdmin(admin.ModelAdmin):
    list_display = ("id", "question", "protocol", "status", "debater_a", "debater_b", "created_at")
    list_filter = ("status", "protocol", "first_side")
    search_fields = ("question__question", "question__external_id")
    raw_id_fields = ("question",)
    # Drawn at creation; changing it would make the debate's turns disagree with its schedule.
    readonly_fields = ("first_side",)
    inlines = [TurnInline]


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    list_display = ("debate", "index", "round", "side", "completion_tokens", "finish_reason")
    raw_id_fields = ("debate",)


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ("turn", "index", "score", "chosen")
    raw_id_fields = ("turn",)


@admin.register(Revision)
class RevisionAdmin(admin.ModelAdmin):
    list_display = ("turn", "step", "principle_id")
    raw_id_fields = ("turn",)


@admin.register(JudgeQuestion)
class JudgeQuestionAdmin(admin.ModelAdmin):
    list_display = ("debate", "after_round", "text", "asked_by", "created_at")
    raw_id_fields = ("debate",)


@admin.register(Tournament)
class TournamentAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "created_at", "started_at", "finished_at")
    list_filter = ("status",)
