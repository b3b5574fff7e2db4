"""The pages in a real browser (Debian's Chromium driven by Playwright) against a real uvicorn server.

Chromium comes from ``apt-get install -y chromium`` (scripts/setup.sh does it); without it these
tests fail with that command rather than skip. Screenshots go to a temp folder, or to
``$CURATE_SCREENSHOTS_DIR`` when set: ``bash scripts/screenshots.sh`` regenerates docs/img/service-*.png
on purpose (the suite never writes into the repository).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from curation.service.app import create_app
from tests.curation.service.conftest import READ_TOKEN, make_settings, serving

pytestmark = pytest.mark.slow
IMG = Path(os.environ.get("CURATE_SCREENSHOTS_DIR") or Path(tempfile.gettempdir()) / "curate-screenshots")


@pytest.fixture()
def page(browser):  # noqa: ANN001, ANN201 - playwright objects
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors too: an invalid pattern="" attribute, a failed resource or CSP refusal is only logged there.
    pg.on("console", lambda msg: errors.append(f"console: {msg.text} ({msg.location.get('url')})")
          if msg.type == "error" else None)
    yield pg
    ctx.close()
    assert not errors, f"script or console errors on the page: {errors}"


def shot(pg, name: str, full_page: bool = True) -> None:  # noqa: ANN001
    IMG.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(IMG / f"service-{name}.png"), full_page=full_page)


def test_browse_run_drop_reason_document_and_whatif(page, open_server: str) -> None:  # noqa: ANN001
    page.goto(open_server + "/")
    assert page.locator("table.runs").is_visible()
    assert page.locator("table.runs tbody tr").count() == 3
    shot(page, "runs")
    page.click("text=qs-lang50")
    page.goto(open_server + "/runs/qs")
    assert "193 kept" in page.locator("p.summary").inner_text()
    assert page.locator("svg#funnel rect").count() >= 2
    shot(page, "run")
    # A drop reason, then one of its documents with the values behind the decision.
    page.click("a.reason:text-is('language')")
    page.wait_for_url("**/drops?*")
    assert "156 documents" in page.locator("h2").first.inner_text()
    first = page.locator("article.sample").first
    assert "score" in first.locator("p.details").inner_text()
    assert first.locator("pre.text").inner_text().strip()
    shot(page, "drops", full_page=False)  # the first documents; the page is long
    first.locator("h3 a").click()
    assert "Dropped by language_id_v1" in page.locator("h2.outcome").inner_text()
    # The what-if slider: moving it changes the numbers, from the API.
    page.goto(open_server + "/runs/qs")
    sec = page.locator("section.whatif[data-column='lang_score']")
    total = sec.locator("b[data-f=docs]")
    assert total.inner_text() == "193"
    slider = sec.locator("input.slider")
    with page.expect_response(lambda r: r.url.endswith("/whatif") and r.status == 200):
        slider.evaluate("(el) => { el.value = el.min; el.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.querySelector(\"section.whatif[data-column='lang_score'] "
                           "b[data-f=docs]\").textContent !== '193'")
    low = int(total.inner_text().replace(",", ""))
    assert low > 193
    assert "Not previewed" in sec.locator(".note").inner_text()
    sec.scroll_into_view_if_needed()
    shot(page, "whatif")
    with page.expect_response(lambda r: r.url.endswith("/whatif")):
        slider.evaluate("(el) => { el.value = el.max; el.dispatchEvent(new Event('input')); }")
    page.wait_for_function(f"() => document.querySelector(\"section.whatif[data-column='lang_score'] "
                           f"b[data-f=docs]\").textContent !== '{low:,}'")
    assert int(total.inner_text().replace(",", "")) < 193


def test_index_page_logs_no_console_error(page, open_server: str) -> None:  # noqa: ANN001
    """The runs page with every form (the submit form's run-id pattern is compiled with the `v` flag); the ``page``
    fixture fails the test on any console error."""
    page.goto(open_server + "/")
    page.wait_for_load_state("networkidle")
    assert page.locator("#submit-form input[name=run_id]").is_visible()
    page.fill("#submit-form input[name=run_id]", "-bad")
    assert page.eval_on_selector("#submit-form input[name=run_id]", "el => el.validity.patternMismatch")


def test_compare_page(page, open_server: str) -> None:  # noqa: ANN001
    page.goto(open_server + "/")
    # The form preselects two different runs (the newest and the one before it), not one run twice.
    assert page.input_value("#compare-form select[name=a]") != page.input_value("#compare-form select[name=b]")
    page.select_option("#compare-form select[name=a]", "qs")
    page.select_option("#compare-form select[name=b]", "qs-lang50")
    page.click("#compare-form button")
    page.wait_for_url("**/compare?*")
    assert "documents with a different decision" in page.content()
    shot(page, "compare", full_page=False)


def test_live_run_progress_page(page, open_server: str) -> None:  # noqa: ANN001
    page.goto(open_server + "/runs/crashed")
    assert page.locator("#progress").is_visible()
    assert "of 15" in page.locator("#progress-tasks").inner_text()
    with page.expect_response(lambda r: r.url.endswith("/progress"), timeout=10_000):
        pass  # the page polls the progress endpoint by itself


def test_login_and_logout_with_tokens(browser, runs_root: Path, tmp_path: Path) -> None:  # noqa: ANN001
    app = create_app(make_settings(runs_root, tmp_path, tokens=True))
    with serving(app) as url:
        ctx = browser.new_context(viewport={"width": 1000, "height": 700})
        pg = ctx.new_page()
        pg.goto(url + "/")
        assert pg.locator("#login-form").is_visible()
        pg.fill("#token", "wrong-token-0123456789")
        pg.click("#login-form button")
        assert "not valid" in pg.locator("#login-error").inner_text()
        shot(pg, "login")
        pg.fill("#token", READ_TOKEN)
        pg.click("#login-form button")
        pg.wait_for_selector("table.runs")
        cookie = next(c for c in ctx.cookies() if c["name"] == "curate_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert pg.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
        assert "signed in (read)" in pg.locator("header").inner_text()
        assert pg.locator("#submit-form").count() == 0  # a read token gets no submit form
        pg.click("#logout")
        pg.wait_for_selector("#login-form")
        assert not [c for c in ctx.cookies() if c["name"] == "curate_token"]
        ctx.close()
