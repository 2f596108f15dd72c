"""Headless Chromium for the HTML tests: Debian's package, flags for a closed network, a fresh profile."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import tempfile

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_page(page: pathlib.Path, screenshot: pathlib.Path | None = None) -> tuple[str, list[str]]:
    """Load `page`; returns (the rendered DOM, the console messages the page logged)."""
    browser = chromium()
    with tempfile.TemporaryDirectory() as profile:
        base = [browser, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
        dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        console = [line for line in dom.stderr.splitlines() if re.search(r":CONSOLE[:(]\d+\)?\]", line)]
        if screenshot is not None:
            subprocess.run([*base, "--window-size=1300,2400", f"--screenshot={screenshot}", page.as_uri()],
                           capture_output=True, timeout=120, check=True)
    return dom.stdout, console
