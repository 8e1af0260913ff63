"""A real browser for the UI tests: Debian's chromium driven by Playwright, headless (never downloaded)."""

from __future__ import annotations

import socket
from typing import Any

from conftest import ROOT
from playwright.sync_api import Page, Playwright

ARTIFACTS = ROOT / "test-artifacts" / "ui"
"""Where the UI tests write their screenshots (ignored by git)."""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright: Playwright) -> Any:
    """Debian's chromium, headless."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


class Console:
    """The console errors and uncaught exceptions of a page."""

    def __init__(self, page: Page):
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
