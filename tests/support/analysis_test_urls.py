"""The project's URLs plus the tournament and analysis pages, for tests that run before the lead
includes them in arena/urls.py (and keep working after: nothing is added twice)."""

from django.urls import include, path

from arena.urls import urlpatterns as project_patterns

_present = {str(p.pattern) for p in project_patterns}

urlpatterns = list(project_patterns)
if "tournaments/" not in _present:
    urlpatterns.append(path("tournaments/", include("arena.urls_tournaments")))
if "analysis/" not in _present:
    urlpatterns.append(path("analysis/", include("judging.urls_analysis")))
