from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from arena import views
from judging import views as judging_views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("debates/", views.debates, name="debates"),
    path("debates/<int:debate_id>/", views.debate_detail, name="debate_detail"),
    path("debates/<int:debate_id>/retry/", views.debate_retry, name="debate_retry"),
    path("judge/", judging_views.queue, name="judge_queue"),
    path("judge/debates/<int:debate_id>/", judging_views.judge_debate, name="judge_debate"),
    path("constitutions/", include("arena.urls_constitution")),
    path("tournaments/", include("arena.urls_tournaments")),
    path("analysis/", include("judging.urls_analysis")),
    path("exports/", include("judging.urls_exports")),
    path("admin/", admin.site.urls),
]
