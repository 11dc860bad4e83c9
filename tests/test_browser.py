"""The pages in headless Chromium (Debian's `chromium`, driven by Playwright for Python), against a real
server: the playground's parameter count against `explain`, a run's heatmap cells against p × T.

Screenshots go to the test's folder; with RNNLAB_SCREENSHOTS=1 also to docs/figures/serve-*.png (the
README's pictures). RNNLAB_SCREENSHOT_RUN=RUN adds one of a run trained elsewhere (serve-emotion.png).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"

if not CHROMIUM.is_file():
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
httpx = pytest.importorskip("httpx")


def _keep(shot: Path) -> None:
    if os.environ.get("RNNLAB_SCREENSHOTS") == "1":
        FIGURES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, FIGURES / shot.name)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from rnnlab.serve import create_app, load_runs
    from test_serve import serving, train_tiny_run

    folder = train_tiny_run(tmp_path_factory.mktemp("browser") / "tweets", bidirectional=False)
    with serving(create_app(load_runs([folder]))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    page.close()
    assert not errors, errors


def _total(cell: str, k: int, p: int) -> str:
    from rnnlab.teach.explain import build, explain

    return f"{explain(build(cell, features=k, units=p, outputs=2)).total:,}"


def _shows_total(page, want: str) -> None:
    page.wait_for_function("(want) => document.getElementById('total')?.textContent === want", arg=want,
                           timeout=60_000)


def test_the_playground_counts_what_explain_counts(server, page, tmp_path):
    page.goto(server + "/")
    _shows_total(page, _total("elman", 50, 10))
    page.locator("#p").fill("30")
    expected = _total("elman", 50, 30)
    _shows_total(page, expected)
    # T moves the costs, never the count
    page.locator("#T").fill("500")
    page.wait_for_function("document.getElementById('per-seq').textContent.includes('T=500')", timeout=60_000)
    assert page.text_content("#total") == expected
    assert "W_a [30×50]" in page.text_content("#equations")
    page.select_option("#cell", "lstm")
    _shows_total(page, _total("lstm", 50, 30))
    assert page.locator("#unrolled svg").count() == 1
    page.wait_for_selector(".misreading", timeout=120_000)
    assert "T=500 words into p=30 units is not 17 pieces of 30 words" in page.text_content("#misreadings")
    page.wait_for_timeout(1000)  # the changed numbers' highlight fades
    shot = tmp_path / "serve-playground.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot)


def test_a_runs_page_draws_p_by_T_cells(server, page, tmp_path):
    from rnnlab.data.tokenize import tokenize

    tweet = "what a great day, i love this so much"
    T = len(tokenize(tweet)[:12])
    page.goto(server + "/run/tweets")
    page.wait_for_selector("#about:not(:empty)")
    page.fill("#text", tweet)
    page.wait_for_selector("svg.heatmap rect.cell", timeout=60_000)
    maps = page.locator("svg.heatmap")
    assert maps.count() == 1  # one layer, one direction
    assert maps.first.locator("rect.cell").count() == 6 * T  # p rows × T columns
    assert page.locator("#y-table tr").count() == 1 + 2  # the tokens, then one row per label
    assert page.locator(".prob").count() == 2
    # the value shown on hover is the API's a_t
    a = httpx.post(server + "/trace", json={"text": tweet}).json()["layers"][0]["a"]
    page.locator('svg.heatmap rect.cell[data-i="3"][data-t="2"]').hover()
    assert "unit 3, step 2" in page.text_content("#tip") and f"a = {a[1][2]:.4f}" in page.text_content("#tip")
    shot = tmp_path / "serve-run.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot)


@pytest.mark.skipif(not os.environ.get("RNNLAB_SCREENSHOT_RUN"), reason="RNNLAB_SCREENSHOT_RUN names no run")
def test_a_trained_runs_page(browser, tmp_path):
    """The README's picture of a real run: its page reads a tweet and draws a map of p × T cells."""
    from rnnlab.serve import create_app, load_runs
    from test_serve import serving

    runs = load_runs([os.environ["RNNLAB_SCREENSHOT_RUN"]])
    name, run = next(iter(runs.items()))
    with serving(create_app(runs)) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/run/{name}")
        page.wait_for_selector("#about:not(:empty)")
        tweet = "I can't believe how happy this makes me #blessed"
        page.fill("#text", tweet)
        page.wait_for_selector("svg.heatmap rect.cell", timeout=60_000)
        T = len(httpx.post(url + "/trace", json={"text": tweet}).json()["tokens"])
        assert page.locator("svg.heatmap").first.locator("rect.cell").count() == run.info()["p"] * T
        page.wait_for_timeout(500)
        shot = tmp_path / "serve-emotion.png"
        page.screenshot(path=str(shot), full_page=True)
        _keep(shot)
