"""Opening detforge's pages in a real browser (headless Chromium through Playwright): what a
user sees, and every error the page makes. Tests skip, with the reason, when Playwright or a
Chromium is not installed."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium installed (Debian: apt-get install chromium)")


@contextmanager
def opened(page_path: Path, screenshot: str | None = None):
    """The page loaded in headless Chromium; yields (page, problems) where ``problems``
    collects console errors, page errors and failed requests. With ``screenshot``, a
    full-page PNG goes to ``$DETFORGE_SCREENSHOTS/<screenshot>.png`` when that is set."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    exe = chromium()
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console", lambda m: m.type == "error" and problems.append(f"console: {m.text}")
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            url = str(page_path)
            url = url if url.startswith("http") else Path(page_path).resolve().as_uri()
            page.goto(url, wait_until="load")
            yield page, problems
            folder = os.environ.get("DETFORGE_SCREENSHOTS")
            if screenshot and folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(folder) / f"{screenshot}.png"), full_page=True)
        finally:
            browser.close()


def broken_images(page) -> list[str]:
    """Images on the page that did not load (after scrolling them all into view)."""
    page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
    page.wait_for_load_state("load")
    page.wait_for_function("[...document.images].every(i => i.complete)")
    return page.evaluate(
        "[...document.images].filter(i => !i.naturalWidth).map(i => i.getAttribute('src'))"
    )


def gallery_state(page, gallery_id: str) -> dict:
    """What a gallery shows: its status counts and the names of the items, in order."""
    return page.evaluate(
        """(id) => {
            const g = document.getElementById(id);
            const s = g.querySelector('[data-role=status]');
            return {shown: Number(s.dataset.shown), total: Number(s.dataset.total),
                    names: [...g.querySelectorAll('figure.item')].map(f => f.dataset.name)};
        }""",
        gallery_id,
    )
