"""The web process never imports torch: backends load their heavy dependencies in workers only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
import django
django.setup()
import arena.asgi
import arena.urls  # every view module the site serves, and the WebSocket consumer
heavy = sorted(m for m in ("torch", "transformers", "vllm", "trl") if m in sys.modules)
print(json.dumps(heavy))
"""


def test_it_serves_every_page_without_importing_torch_or_transformers() -> None:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="arena.settings")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
