"""`trainwire demo --ui`: the web UI shows the demo's run, and keeps serving after the report until Ctrl+C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from browser import ARTIFACTS, Console, free_port, launch_chromium
from playwright.sync_api import sync_playwright


def test_demo_serves_the_ui_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "trainwire", "--data-dir", str(tmp_path / "data"), "demo", "--steps", "3"]
    demo = subprocess.Popen(
        [*command, "--output", str(tmp_path / "out"), "--judge-sample-rate", "1", "--ui", "--ui-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while not any("serving until Ctrl+C" in line for line in lines):
            line = demo.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        url = next(re.search(r"(http://\S+)", line)[1] for line in lines if "serving until Ctrl+C" in line)
        run = url.split("run=")[1]
        assert url == f"http://127.0.0.1:{port}/run?run={run}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            console = Console(page)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(f"tr[data-run='{run}']")
            assert "1–3" in page.inner_text(f"tr[data-run='{run}']")  # TRL counts steps from 1
            page.goto(url)
            page.wait_for_selector("#progress[data-last-step]")  # set once every chart is drawn
            assert page.get_attribute("#progress", "data-last-step") == "3"
            assert page.locator("#chart-reward .main-svg").count() > 0  # plotly draws its layers as svg
            page.screenshot(path=str(ARTIFACTS / "demo-run.png"))
            assert console.errors == []
            browser.close()
        assert demo.poll() is None  # still serving
    finally:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, "".join(lines) + output
    assert "demo finished" in output
