"""Open a report in a real, headless Chromium and read back what a reader would see.

Used by the test suite (and available to reviewers) to show the report renders: the page's
own load-time check (see :mod:`segments.audit.render`) counts visible checklist rows and
decoded chart images; this module reads those counts from the rendered DOM and can take a
screenshot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["find_chromium", "rendered_counts", "rendered_verdicts", "screenshot"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# A closed network: without these, Chromium keeps trying to reach Google's services.
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
)


def find_chromium() -> str | None:
    """Path of a Chromium-family browser, or None."""
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: float) -> str:
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError(
            "no Chromium found; install Debian's package: apt-get install -y chromium"
        )
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [browser, *_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    return proc.stdout


def rendered_counts(html_path: Path, timeout: float = 60) -> dict[str, int]:
    """Visible checklist rows and charts after the page loaded in Chromium."""
    dom = _run(["--dump-dom", Path(html_path).resolve().as_uri()], timeout)
    body = re.search(r"<body([^>]*)>", dom)
    attrs = dict(re.findall(r'data-([\w-]+)="(\d+)"', body.group(1) if body else ""))
    return {k: int(v) for k, v in attrs.items()}


def rendered_verdicts(html_path: Path, timeout: float = 60) -> dict[str, str]:
    """Clause id → the verdict text a reader sees on each visible clause section."""
    dom = _run(["--dump-dom", Path(html_path).resolve().as_uri()], timeout)
    body = re.search(r"<body([^>]*)>", dom)
    found = re.search(r'data-verdicts="([^"]*)"', body.group(1) if body else "")
    pairs = [p.split("=", 1) for p in found.group(1).split("|") if "=" in p] if found else []
    return {k: v for k, v in pairs}


def screenshot(
    html_path: Path, png_path: Path, size: str = "1280,2400", timeout: float = 60
) -> Path:
    """Save a screenshot of the rendered page."""
    _run(
        [
            f"--screenshot={Path(png_path).resolve()}",
            f"--window-size={size}",
            Path(html_path).resolve().as_uri(),
        ],
        timeout,
    )
    return Path(png_path)
