"""Tournament pages; included by arena/urls.py under tournaments/."""

from django.urls import path

from arena import views_tournaments as views

urlpatterns = [
    path("", views.tournament_list, name="tournaments"),
    path("<int:tournament_id>/", views.tournament_detail, name="tournament_detail"),
    path("<int:tournament_id>/progress.json", views.tournament_progress, name="tournament_progress"),
    path("<int:tournament_id>/pause/", views.tournament_pause, name="tournament_pause"),
    path("<int:tournament_id>/resume/", views.tournament_resume, name="tournament_resume"),
    path("<int:tournament_id>/cancel/", views.tournament_cancel, name="tournament_cancel"),
]
