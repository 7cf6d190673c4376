"""Open a report in a real browser: headless Chromium through Playwright (the system's browser, nothing
downloaded), collect console errors, page errors and broken images, and save a screenshot of the top.

Used by ``xbench report --screenshot`` and the rendering test. Needs the ``playwright`` package
(``pip install "xbench[browser]"``) and a Chromium binary (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.errors import ConfigError
from bench.png import paletted

# Chromium flags for a sandbox without a network or a screen (as the machine notes recommend)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROKEN_IMAGES = "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)"


def chromium() -> str | None:
    """The system Chromium, if there is one."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def check_page(page_path: Path, screenshot: Path | None = None, width: int = 1280, height: int = 1600) -> list[str]:
    """Problems found when ``page_path`` renders (console errors, page errors, broken images); saves a
    screenshot of the top ``height`` pixels to ``screenshot`` when given."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ConfigError(
            "checking a report in a browser needs Playwright", field="--screenshot", fix='pip install "xbench[browser]"'
        ) from exc
    binary = chromium()
    if binary is None:
        raise ConfigError("no Chromium found", field="--screenshot", fix="install one, e.g. apt-get install chromium")
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
            problems += [f"broken image: {alt[:80]}" for alt in page.evaluate(BROKEN_IMAGES)]
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                Path(screenshot).write_bytes(paletted(page.screenshot(full_page=False)))
        finally:
            browser.close()
    return problems
