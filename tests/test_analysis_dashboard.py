"""The analysis dashboard renders in headless Chromium from a file: every chart drawn, no errors, no network.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); without it the test fails
and says so (it is part of the CI image, not optional).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from browser import CHROMIUM_ARGS
from click.testing import CliRunner
from test_analysis import _fill

from trainwire.analysis.commands import analyze_command

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--window-size=1400,1000",
            *extra,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _png_pixels(path: Path) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct RGB(A) pixel values of an 8-bit, non-interlaced PNG (stdlib only)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    idat = b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        else:
            chunks.setdefault(kind, body)
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and color in (2, 6) and interlace == 0
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    previous = bytearray(stride)
    colors: set[bytes] = set()
    offset = 0
    for _ in range(height):
        kind, line = raw[offset], bytearray(raw[offset + 1 : offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        colors.update(bytes(line[i : i + 3]) for i in range(0, stride, bpp * 7))
        previous = line
    return width, height, colors


def _renders_every_chart(page: Path, profile: Path) -> int:
    """Load ``page`` in Chromium; assert every chart it declares was drawn without a script error; the count."""
    charts = int(re.search(r'data-charts="(\d+)"', page.read_text())[1])
    dom = _chromium(page, profile, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    status = re.search(r'<div id="tw-status"[^>]*data-rendered="(\d*)"[^>]*>([^<]*)<', dom.stdout)
    assert status, dom.stdout[:2000]
    errors = re.search(r'<pre id="tw-errors">(.*?)</pre>', dom.stdout, re.S)[1]
    assert errors == "", errors
    assert status[1] == str(charts), status[2]
    assert dom.stdout.count('class="main-svg"') >= charts
    return charts


def test_dashboard_renders_every_chart_without_errors(embedded_settings, tmp_path: Path):
    assert CHROMIUM is not None, "this test needs Chromium: apt-get install -y chromium"
    _fill(embedded_settings)
    out = tmp_path / "report"
    result = CliRunner().invoke(analyze_command, ["--output", str(out)], obj=embedded_settings)
    assert result.exit_code == 0, result.output
    page = out / "dashboard.html"
    assert _renders_every_chart(page, tmp_path / "profile-dom") >= 12
    # seed 004's interactive page: the logits probe's charts alone
    assert _renders_every_chart(out / "target_token_probabilities.html", tmp_path / "profile-logits") >= 4

    screenshot = tmp_path / "dashboard.png"
    shot = _chromium(page, tmp_path / "profile-shot", f"--screenshot={screenshot}")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert "net::ERR_" not in shot.stderr  # nothing tried (and failed) to reach the network
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", shot.stderr), shot.stderr[-2000:]
    width, height, colors = _png_pixels(screenshot)
    assert (width, height) == (1400, 1000)
    assert len(colors) > 20  # a blank page has one or two colours; charts have many
