"""The page at /ui in a real browser (Debian's chromium, headless, driven by Playwright) while
a real server works: the model loading, its slots filling, a queue, a 503 in the event log, an
eviction under a budget for one model; a screenshot for docs/ui.png."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GEMMA, SMOL
from liveview import Load, view_server  # noqa: F401  (a fixture)

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).parent.parent / "docs"
WAIT_MS = 300_000  # the shared test machine can be slow; every wait ends as soon as the page shows it


@pytest.fixture
def page(request) -> Iterator:
    """A fresh headless Chromium profile (no Playwright-downloaded browser), phone or laptop sized."""
    size = getattr(request, "param", {"width": 1280, "height": 1000})
    with playwright.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                       args=ARGS, viewport=size)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page
        context.close()
        assert not errors, errors


def runner(page, model: str):
    return page.locator(f'.runner[data-model="{model}"]')


def test_page_shows_loading_slots_queue_refusal_and_eviction(view_server, page):
    page.goto(view_server.url + "/ui")
    page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
    assert page.locator(".runner").count() == 0 and page.locator("#log li").count() == 0

    Load(view_server.url, SMOL, 2, num_predict=16).wait()  # a first minute of history for the charts
    page.wait_for_selector('#requests tr[data-status="200"]', timeout=WAIT_MS)

    # Six requests on two slots and a queue of two: two run, two wait, two are refused (503).
    load = Load(view_server.url, SMOL, 6, num_predict=128)  # long enough for a snapshot (1 s) to see the queue
    page.wait_for_selector(f'#log li[data-kind="model_loading"][data-model="{SMOL}"]', timeout=WAIT_MS)
    page.wait_for_selector(f'#log li[data-kind="model_loaded"][data-model="{SMOL}"]', timeout=WAIT_MS)
    page.wait_for_selector(f'.runner[data-model="{SMOL}"][data-busy="2"]', timeout=WAIT_MS)
    assert runner(page, SMOL).locator(".slot.busy").count() == 2
    refused = page.locator('#log li[data-kind="request_refused"]')
    refused.first.wait_for(timeout=WAIT_MS)
    assert refused.count() == 2 and "503" in refused.first.inner_text()
    assert "maximum pending requests exceeded" in refused.first.inner_text()
    rows = page.locator("#queue tr")
    rows.first.wait_for(timeout=WAIT_MS)
    positions = sorted(int(p) for p in rows.evaluate_all("rs => rs.map(r => r.dataset.position)"))
    assert positions in ([1, 2], [1]), positions  # the screenshot can catch the second one leaving
    assert rows.first.locator("td").nth(1).inner_text() == SMOL
    eta = rows.first.locator("td.eta").inner_text()
    assert eta == "–" or eta.endswith("s")  # an ETA where the scheduler gives one (eta_s), else a dash
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "ui.png"), full_page=True)

    records = load.wait()
    assert sorted(r["status"] for r in records) == [200, 200, 200, 200, 503, 503]
    page.wait_for_selector(f'.runner[data-model="{SMOL}"][data-busy="0"]', timeout=WAIT_MS)
    assert page.locator('#requests tr[data-status="200"]').count() == 2 + 4
    assert page.locator('#requests tr[data-status="503"]').count() == 2
    assert page.locator("#tps-now").inner_text() != ""

    # The budget holds one model: gemma's load evicts idle smollm2, and the log says why.
    Load(view_server.url, GEMMA, 1, num_predict=4).wait()
    evicted = page.locator(f'#log li[data-kind="model_unloaded"][data-model="{SMOL}"]')
    evicted.wait_for(timeout=WAIT_MS)
    assert f"evicted to make room for {GEMMA} on cpu" in evicted.inner_text()
    page.wait_for_selector(f'.runner[data-model="{GEMMA}"][data-state="ready"]', timeout=WAIT_MS)
    assert runner(page, SMOL).count() == 0


@pytest.mark.parametrize("page", [{"width": 390, "height": 844}], indirect=True)
def test_page_fits_a_phone_screen(view_server, page):
    page.goto(view_server.url + "/ui")
    page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
    # No panel wider than the screen: the grid falls to one column; wide tables scroll inside theirs.
    widths = page.locator("main > section").evaluate_all("ss => ss.map(s => s.getBoundingClientRect().right)")
    assert widths and max(widths) <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
