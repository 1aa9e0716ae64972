"""Debater and AI judge profile pages (researchers only). Included by arena/urls.py under ``profiles/``."""

from django.urls import path, register_converter

from arena import views_profiles as views


class KindConverter:
    """``debaters`` or ``judges``: the kinds of :data:`arena.views_profiles.KINDS`."""

    regex = "|".join(views.KINDS)

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(KindConverter, "profilekind")

urlpatterns = [
    path("", views.profile_list, name="profile_list"),
    path("checks/<int:check_id>/", views.check_status, name="profile_check"),
    path("<profilekind:kind>/new/", views.profile_create, name="profile_create"),
    path("<profilekind:kind>/<int:profile_id>/", views.profile_detail, name="profile_detail"),
    path("<profilekind:kind>/<int:profile_id>/edit/", views.profile_edit, name="profile_edit"),
    path("<profilekind:kind>/<int:profile_id>/test/", views.profile_test, name="profile_test"),
]
