"""The rollout debugger in a real headless browser: Debian's Chromium driven by Playwright (no browser download).

``capture`` clicks Generate, waits for the rollouts and the reward table, and saves a screenshot; the test uses it
with a temporary path, and ``python tests/test_app_browser.py`` uses it to refresh ``assets/app_screenshot.png``
(the README's picture).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = ROOT / "assets" / "app_screenshot.png"


def _start_app():
    """(demo, url): app.py's Blocks on a free local port, in this process (`app.serve`, as in tests/test_app.py)."""
    sys.path.insert(0, str(ROOT))  # app.py lives at the top level; also when this file runs as a script
    import app

    demo, url, _ = app.serve(os.environ.get("WORKBENCH_APP_TEST_MODEL"))
    return demo, url


def capture(url: str, path: str | Path, *, width: int = 1440, height: int = 1000, full_page: bool = True,
            timeout_s: float = 60.0) -> dict:
    """Open the app, click Generate, wait for the drawn rollouts and the reward table, save a screenshot.

    Returns what the page showed: ``{"images": n, "table_rows": n, "rendered_rows": n, "headers": [...]}``.
    Requests to anything but the app are refused, so the page never waits on the network (fonts, analytics).
    """
    from playwright.sync_api import sync_playwright

    base = url.rstrip("/")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                       else route.abort())
            page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
            page.wait_for_selector("#preview img", timeout=timeout_s * 1000)  # the example input has loaded
            page.click("#generate-btn")
            images = page.locator("#rollout-gallery img")
            # The table is virtualised: its grid declares every row (aria-rowcount, header included) and
            # renders the visible ones as div.virtual-row.
            page.wait_for_function(
                "() => document.querySelectorAll('#rollout-gallery img').length >= 8 && "
                "Number(document.querySelector('#reward-table [role=grid]')?.getAttribute('aria-rowcount')) > 1 "
                "&& document.querySelectorAll('#reward-table .virtual-row').length > 0",
                timeout=timeout_s * 1000)
            page.wait_for_function(  # every thumbnail decoded, so the screenshot shows them
                "() => [...document.querySelectorAll('#rollout-gallery img')].every(i => i.complete && "
                "i.naturalWidth > 0)", timeout=timeout_s * 1000)
            headers = [h.strip() for h in page.locator("#reward-table thead th").all_inner_texts()]
            result = {"images": images.count(),
                      "table_rows": int(page.locator("#reward-table [role=grid]").get_attribute("aria-rowcount")) - 1,
                      "rendered_rows": page.locator("#reward-table .virtual-row").count(),
                      "headers": headers}
            page.evaluate("window.scrollTo(0, 0)")  # clicking scrolled to the button; show the page from the top
            page.screenshot(path=str(path), full_page=full_page)
        finally:
            browser.close()
    return result


@pytest.fixture(scope="module")
def browser_app():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is not installed (`make browser` installs Debian's chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    demo, url = _start_app()
    yield url
    demo.close()


def test_generate_in_a_real_browser_shows_8_rollouts_and_the_reward_table(browser_app, tmp_path):
    shot = tmp_path / "app.png"
    seen = capture(browser_app, shot)
    assert seen["images"] == 8, seen
    assert seen["table_rows"] == 8 and seen["rendered_rows"] >= 1, seen
    assert any("total" in h for h in seen["headers"]) and any("advantage" in h for h in seen["headers"]), seen
    assert shot.stat().st_size > 10_000


def refresh_screenshot(path: Path = SCREENSHOT, *, width: int = 1100) -> Path:
    """Rewrite the README's screenshot: the app's first screen after Generate, shrunk to a small PNG."""
    from PIL import Image

    demo, url = _start_app()
    try:
        raw = path.with_suffix(".raw.png")
        capture(url, raw, width=1440, height=1050, full_page=False)
    finally:
        demo.close()
    with Image.open(raw) as im:
        im = im.convert("RGB")
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        im.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
    return path


if __name__ == "__main__":
    out = refresh_screenshot(Path(sys.argv[1]) if len(sys.argv) > 1 else SCREENSHOT)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
