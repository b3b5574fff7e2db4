"""Stored HTML injection (issue 27 item 5): values a writer of the run directory controls (``progress.json``, the
manifest's totals, stage and domain names, document ids, the CMR fit's domain, decision details) reach the pages
escaped or as a placeholder, never as markup; and in Chromium no planted element exists, nothing navigates and no
dialog opens. ``static/app.js`` binds only to elements carrying the response's ``data-bind`` token."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from curation.service.app import create_app
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.service.conftest import make_settings, serving

EVIL = "https://evil.example/"
# Each payload tries a different way out: a script element, an event handler, a form that app.js could bind (its
# id is the submit form's), and an attribute break-out into a meta refresh.
PAYLOADS = ('<script>window.__pwned = 1; alert(1)</script>',
            '<img src=x onerror="window.__pwned = 2; alert(2)">',
            f'<form id="submit-form" action="{EVIL}" method="post"><button id="evil-button">go</button></form>',
            f'"><meta http-equiv="refresh" content="0;url={EVIL}">')
HOSTILE = "".join(PAYLOADS)
# What must never appear in a served page: any payload's markup.
RAW = ("<script>window", "<img src=x", '<form id="submit-form" action', '<meta http-equiv')
ESCAPED = "&lt;script&gt;window"


def _write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))


def make_hostile_runs(root: Path) -> Path:
    """Under ``root``: ``evil`` (a finished run whose inputs, manifest and CMR fit hold the payloads), ``evil2`` (a
    copy, to compare) and ``live`` (no manifest, a hostile ``progress.json``)."""
    inp = root.parent / "hostile-in"
    docs = [{"id": f"{HOSTILE}{i}", "domain": HOSTILE, "text": PROSE[i % 3] + f" {HOSTILE} {i}"} for i in range(4)]
    docs.append({"id": f"{HOSTILE}short", "domain": HOSTILE, "text": HOSTILE[:15]})
    docs.append(dict(docs[0]))  # an exact duplicate: a duplicate cluster on the document page
    write_jsonl(inp / "a.jsonl", docs)
    run = root / "evil"
    run_pipeline(pipeline_dict([str(inp / "*.jsonl")], run))
    m = json.loads((run / "manifest.json").read_text())
    m["name"] = HOSTILE
    m["token_counter"] = HOSTILE
    m["fingerprint"] = HOSTILE
    # (created_unix stays a number: curation.io.runs.list_runs sorts by it and fails on a string; not a page's.)
    m["totals"] = {k: HOSTILE for k in ("docs_read", "docs_out", "input_files", "input_bytes", "quarantined")}
    for s in m["stages"]:  # (counts stay numbers: curate stats loads them into a typed table and refuses others)
        s["name"] = HOSTILE + s["name"]
    # the run page's "Deduplicated against earlier runs" section: the run name a link target would come from
    m["corpus"] = [{"stage": HOSTILE, "docs_in": HOSTILE, "index": 1,
                    "against": [{"run": f"{root}/{HOSTILE}", "removed": HOSTILE, "share": HOSTILE}]}]
    _write(run / "manifest.json", m)
    (run / "mixture").mkdir()
    _write(run / "mixture" / "cmr_fit.json", {"ratios": [0.1, 0.2], "cmr": [1.0, -0.5, 0.1], "eps": 0.01,
                                              "token_unit": 1e6, "t_max": 10.0, "grid": [[1.0, 0.3], [5.0, 0.2]],
                                              "domain": HOSTILE, "general": HOSTILE})
    shutil.copytree(run, root / "evil2")
    live = root / "live"
    shutil.copytree(run, live)
    (live / "manifest.json").unlink()
    _write(live / "progress.json", {"version": 1,  # this version's: its values are what the page shows
                                    "passes": [{k: HOSTILE for k in ("pass", "tasks_done", "tasks_total", "docs",
                                                                     "docs_per_s", "bytes_in")}],
                                    **{k: HOSTILE for k in ("tasks_done", "tasks_total", "input_bytes_done",
                                                            "input_bytes", "eta_s", "state")}})
    return root


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hostile_runs(tmp_path_factory.mktemp("hostile") / "runs")


def _urls() -> list[str]:
    doc = quote(f"{HOSTILE}0", safe="")
    return ["/", "/runs/evil", "/runs/live", "/runs/evil/drops",
            "/runs/evil/drops?" + "stage=" + quote(HOSTILE + "text_length_v1") + "&reason=too_short",
            f"/runs/evil/docs/{doc}", f"/runs/evil/docs/{quote(HOSTILE + 'short', safe='')}",
            f"/runs/evil/docs/{quote(HOSTILE + '1', safe='')}", "/compare?a=evil&b=evil2"]


def test_every_page_escapes_hostile_values_from_run_files(hostile_root: Path, tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(hostile_root, tmp_path / "svc")), base_url="http://127.0.0.1") as c:
        for url in _urls():
            r = c.get(url)
            assert r.status_code == 200, (url, r.status_code, r.text[-2000:])
            for raw in RAW:
                assert raw not in r.text, (url, raw)
            # The hostile strings are shown, as text (the page did not just leave them out).
            assert ESCAPED in r.text or "&lt;script&gt;" in r.text, url
            if url == "/runs/evil":
                assert "Deduplicated against earlier runs" in r.text  # the hostile corpus entry was rendered
            if url in ("/runs/evil", "/runs/live"):
                # Numbers that are not numbers: the placeholder, never the string.
                assert "– documents read from – files" in r.text or "– of –</span> tasks" in r.text, url


def test_app_js_binds_only_elements_with_the_response_token(hostile_root: Path, tmp_path: Path) -> None:
    """Every element app.js drives carries the token of <meta name="curate-bind">, fresh per response."""
    with TestClient(create_app(make_settings(hostile_root, tmp_path / "svc")), base_url="http://127.0.0.1") as c:
        pages = [c.get("/").text, c.get("/").text, c.get("/runs/evil").text, c.get("/runs/live").text]
    tokens = [re.search(r'<head><meta charset="utf-8"><meta name="curate-bind" content="([^"]{16,})">', p).group(1)
              for p in pages]
    assert len(set(tokens)) == len(tokens)
    for p, tok in zip(pages, tokens):
        for tag in re.findall(r'<(?:form|section|div)[^>]*id="(?:submit-form|submit-result|progress)"[^>]*>', p):
            assert f'data-bind="{tok}"' in tag, tag
        for tag in re.findall(r'<section class="card whatif"[^>]*>', p):
            assert f'data-bind="{tok}"' in tag, tag
    app_js = (Path(__file__).resolve().parents[2] / "curation/service/static/app.js").read_text()
    assert 'getElementById("submit-form")' not in app_js and "dataset.bind === BIND" in app_js


@pytest.mark.slow
def test_hostile_run_files_in_chromium_plant_nothing(hostile_root: Path, tmp_path: Path, browser) -> None:  # noqa: ANN001
    """Every page in Chromium: no planted element in the DOM, no navigation, no dialog, no console error."""
    app = create_app(make_settings(hostile_root, tmp_path / "svc"))
    with serving(app) as base:
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        pg = ctx.new_page()
        events: list[str] = []
        pg.on("dialog", lambda d: (events.append(f"dialog: {d.message}"), d.dismiss()))
        pg.on("pageerror", lambda exc: events.append(f"pageerror: {exc}"))
        pg.on("console", lambda msg: events.append(f"console: {msg.text}") if msg.type == "error" else None)
        pg.on("framenavigated", lambda f: events.append(f"navigated: {f.url}")
              if f == pg.main_frame and not f.url.startswith(base) else None)
        pg.route(re.compile(r"^https://evil\.example/.*"), lambda route: (events.append("evil request"),
                                                                          route.abort()))
        for url in _urls():
            pg.goto(base + url)
            pg.wait_for_load_state("load")
            time.sleep(1.2)  # a meta refresh of 0 s, an image error handler and the progress poll have run by now
            assert pg.url.startswith(base), (url, pg.url)
            found = pg.evaluate("""() => ({
                pwned: window.__pwned === undefined ? null : window.__pwned,
                scripts: Array.from(document.scripts).map(s => s.getAttribute('src')),
                imgs: document.querySelectorAll('img').length,
                metas: document.querySelectorAll('meta[http-equiv]').length,
                evilForms: Array.from(document.forms).filter(f => (f.getAttribute('action') || '').includes('evil')).length,
                evilButtons: document.querySelectorAll('#evil-button').length,
                text: document.body.innerText.includes('<script>window.__pwned'),
            })""")
            assert found == {"pwned": None, "scripts": ["/static/app.js"], "imgs": 0, "metas": 0, "evilForms": 0,
                             "evilButtons": 0, "text": True}, (url, found)
        # The submit form app.js bound is the server's: one with the token, the result box beside it.
        pg.goto(base + "/")
        assert pg.locator("form#submit-form").count() == 1
        assert pg.evaluate("() => document.querySelector('form#submit-form').dataset.bind === "
                           "document.querySelector(\"meta[name='curate-bind']\").content")
        ctx.close()
    assert not events, events


