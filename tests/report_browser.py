"""Render an HTML page in headless Chromium: its DOM after the scripts ran, the console errors,
a screenshot. Tests that need it skip with a reason where Chromium is not installed (.ci/run
installs the distribution's package)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")


@dataclass
class Rendered:
    dom: str
    console_errors: list[str]
    screenshot: np.ndarray  # (height, width, 3) uint8
    seconds: float  # browser start to exit

    @property
    def drawn_ms(self) -> int | None:
        """Load-to-all-figures-drawn time the page recorded (None: its script did not finish)."""
        m = re.search(r'data-drawn-ms="(\d+)"', self.dom)
        return int(m.group(1)) if m else None

    @property
    def figures_drawn(self) -> int:
        """Figure elements plotly has drawn into (it adds its class to each)."""
        return len(re.findall(r'class="fig js-plotly-plot"', self.dom))


def render(page: Path, work: Path, size=(1200, 900), budget_ms: int = 15000) -> Rendered:
    """Load ``page`` in headless Chromium, let its scripts run, return the DOM, console errors
    (uncaught exceptions and console.error) and a screenshot of ``size`` (width, height) px."""
    from PIL import Image

    exe = chromium()
    shot = work / f"{page.stem}_screenshot.png"
    t0 = time.perf_counter()
    r = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={work / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
         f"--virtual-time-budget={budget_ms}", f"--window-size={size[0]},{size[1]}",
         f"--screenshot={shot}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    errors = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln
              and ("Uncaught" in ln or "ERROR:CONSOLE" in ln or "Error:" in ln)]
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    return Rendered(r.stdout, errors, pixels, seconds)


def non_blank(pixels: np.ndarray) -> float:
    """Fraction of the screenshot that is not the page's white background."""
    return float((pixels.min(axis=2) < 235).mean())
