"""Study and judge-management pages; included by arena/urls.py under studies/."""

from django.urls import path

from judging import views_studies as views

urlpatterns = [
    path("", views.study_list, name="studies"),
    path("<int:study_id>/", views.study_detail, name="study_detail"),
    path("judges/", views.judges_page, name="judges_page"),
    path("human-vs-ai/", views.human_vs_ai, name="human_vs_ai"),
    path("judges/<int:judge_id>/", views.judge_action, name="judge_action"),
    path("judges/<int:judge_id>/stories/", views.judge_stories, name="judge_stories"),
]
