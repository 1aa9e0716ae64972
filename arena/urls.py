from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from arena import views
from judging import views as judging_views
from judging import views_studies

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", RedirectView.as_view(url=static("arena/favicon.svg"), permanent=True)),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("debates/", views.debates, name="debates"),
    path("debates/questions/", views.question_search, name="question_search"),
    path("debates/<int:debate_id>/", views.debate_detail, name="debate_detail"),
    path("debates/<int:debate_id>/retry/", views.debate_retry, name="debate_retry"),
    path("judge/", views_studies.queue, name="judge_queue"),
    path("judge/studies/<int:study_id>/next/", views_studies.study_next, name="study_next"),
    path("judge/studies/<int:study_id>/leaderboard/", views_studies.study_leaderboard, name="study_leaderboard"),
    path("join/<str:token>/", views_studies.join, name="join"),
    path("studies/", include("judging.urls_studies")),
    path("judge/debates/<int:debate_id>/", judging_views.judge_debate, name="judge_debate"),
    path("constitutions/", include("arena.urls_constitution")),
    path("profiles/", include("arena.urls_profiles")),
    path("questions/", include("arena.urls_questions")),
    path("tournaments/", include("arena.urls_tournaments")),
    path("analysis/", include("judging.urls_analysis")),
    path("exports/", include("judging.urls_exports")),
    path("admin/", admin.site.urls),
]
