"""Helpers shared by tests (importable from any test module: tests/support is on sys.path)."""

from __future__ import annotations


def session_cookie(user) -> str:  # type: ignore[no-untyped-def]
    """A real session for ``user``, as the browser would hold it after signing in."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def ws_headers(user, origin: str = "http://127.0.0.1") -> list[tuple[bytes, bytes]]:  # type: ignore[no-untyped-def]
    return [(b"cookie", f"sessionid={session_cookie(user)}".encode()), (b"origin", origin.encode())]


PASSWORD = "correct-horse-battery-staple"

# Flags for Debian's Chromium as root in a sandbox with no network (see the machine notes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
