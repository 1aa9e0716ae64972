"""The app's URLs with the constitution pages, whether or not arena/urls.py includes them yet."""

from django.urls import include, path

from arena.urls import urlpatterns as _base

urlpatterns = list(_base)
if not any(str(p.pattern) == "constitutions/" for p in _base):
    urlpatterns.append(path("constitutions/", include("arena.urls_constitution")))
