"""The HTML pages: the submit form's run-id pattern is valid under the regex `v` flag browsers compile it with,
and the compare form does not preselect one run for both sides. (The browser check that the index page logs no
console error is in tests/curation/service/test_browser.py's ``page`` fixture.)"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from curation.service.app import create_app
from curation.service.jobs import RUN_ID_RE
from tests.curation.service.conftest import make_settings


def _index(root: Path, tmp_path: Path) -> str:
    with TestClient(create_app(make_settings(root, tmp_path / "svc")), base_url="http://127.0.0.1") as c:
        r = c.get("/")
        assert r.status_code == 200
        return r.text


def test_run_id_pattern_is_valid_under_the_v_flag_and_matches_the_server_rule(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    html = _index(tmp_path / "runs", tmp_path)
    (pattern,) = re.findall(r'<input name="run_id" pattern="([^"]*)"', html)
    # Under `v`, a '-' in a class must be escaped wherever it stands (it is reserved), so no bare '-' may remain.
    for cls in re.findall(r"\[((?:\\.|[^\]])*)\]", pattern):
        assert re.search(r"(?<!\\)-", cls.replace("A-Z", "").replace("a-z", "").replace("0-9", "")) is None, cls
    # A browser anchors the pattern to the whole value; it accepts exactly the ids the server accepts.
    for rid in ("run-1", "a.b_c-d", "x" * 128, "-lead", ".hidden", "a/b", "", "x" * 129, "a b"):
        assert bool(re.fullmatch(pattern, rid)) == bool(RUN_ID_RE.fullmatch(rid)), rid


def test_compare_form_preselects_two_different_runs(tiny_run: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_run, tiny_run.parent / "older")
    html = _index(tiny_run.parent, tmp_path)
    form = html[html.index('id="compare-form"'):]
    a = re.search(r'<select name="a">(.*?)</select>', form).group(1)
    b = re.search(r'<select name="b">(.*?)</select>', form).group(1)
    (sel_a,) = re.findall(r'<option value="([^"]*)" selected>', a)
    (sel_b,) = re.findall(r'<option value="([^"]*)" selected>', b)
    runs = re.findall(r'<option value="([^"]*)"', a)
    assert sel_a == runs[0] and sel_b == runs[1] and sel_a != sel_b  # the newest, and the one before it
