"""The --quick modes of benchmarks/preselect_effect.py and benchmarks/cmr_holdout.py run end to end.

They assert that the pipeline ran (every arm trained and evaluated, every ratio predicted), not
which arm wins: the quick scale is far too small for that (docs/preselect_effect.md)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import REPO


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_roff_text_strips_markup() -> None:
    mod = _load("preselect_effect")
    src = '.\\" comment\n.TH LS 1\n.SH NAME\nls \\- list \\fBdirectory\\fR contents\n.B \\-a\n.PP\ndo not ignore'
    assert mod.roff_text(src) == "NAME\nls - list directory contents\n-a\n\ndo not ignore"


@pytest.mark.parametrize("in_process", [True, False])
def test_a_failing_command_raises_with_what_it_printed(tmp_path: Path, in_process: bool) -> None:
    # `curate run` prints its user errors on stdout (exit 2): the error must carry them, else a
    # failed experiment step says only "command failed (2)"
    commands = _load("_commands")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "input": {"paths": [str(tmp_path / "*.jsonl")]},
                               "stages": [{"stage": "no_such_stage_v1"}], "output": {"dir": str(tmp_path / "out")}}))
    cmds = commands.Commands(REPO, tmp_path / "commands.log", threads=1, in_process=in_process)
    with pytest.raises(commands.CommandError, match=r"(?s)failed \(2\): python -m curation.cli run .*no_such_stage_v1"):
        cmds("curation.cli", "run", str(bad))
    assert "curation.cli run" in (tmp_path / "commands.log").read_text()  # logged, with its time, even when failing


def test_family_mix_emphasises_one_source_and_keeps_the_others_natural_proportions() -> None:
    mod = _load("preselect_effect")
    natural = {"a": 0.5, "b": 0.3, "c": 0.2}
    assert mod.family_mix(natural, None, 0.6) == natural
    mix = mod.family_mix(natural, "c", 0.6)
    assert mix["c"] == 0.6 and math.isclose(sum(mix.values()), 1.0)
    assert math.isclose(mix["a"], 0.4 * 0.5 / 0.8) and math.isclose(mix["a"] / mix["b"], 0.5 / 0.3)


def test_cut_document_cuts_at_a_line_break_in_the_second_half_of_the_limit() -> None:
    mod = _load("preselect_effect")
    assert mod.cut_document("short", 10) == "short" and mod.cut_document("x" * 50, None) == "x" * 50
    assert mod.cut_document("one line\ntwo line\nthree", 20) == "one line\ntwo line"
    assert mod.cut_document("a" * 30 + " tail", 20) == "a" * 20  # no break in the second half: a hard cut
    assert mod.cut_document("ab\n" + "word " * 10, 20) == "ab\nword word word"  # the break too early: a space


_PRESELECT = _load("preselect_effect")


@given(text=st.text(alphabet="ab \n", max_size=300), limit=st.integers(2, 200))
def test_cut_document_is_a_prefix_within_the_limit(text: str, limit: int) -> None:
    cut = _PRESELECT.cut_document(text, limit)
    if len(text) <= limit:
        assert cut == text
    else:  # a prefix within the limit, ending at the limit or just before a line break or space
        assert len(cut) <= limit and text.startswith(cut)
        assert cut == text[:limit] or text[len(cut)] in " \n"


def _docs_of(sizes: list[int], dom: str) -> list[dict]:
    return [{"id": f"{dom}{i}", "text": "x" * n} for i, n in enumerate(sizes)]


def test_fill_shares_fills_each_source_to_its_share_and_refills_a_short_one_from_the_others() -> None:
    cands = {"a": _docs_of([10, 10, 10], "a"), "b": _docs_of([10], "b"), "c": _docs_of([10, 10, 10, 10], "c")}
    plain = _PRESELECT.fill_shares(cands, 20, refill=False)
    assert {d: [x["id"] for x in v] for d, v in plain.items()} == {"a": ["a0", "a1"], "b": ["b0"], "c": ["c0", "c1"]}
    refilled = _PRESELECT.fill_shares(cands, 20, refill=True)  # b lacks 10: the first donor with documents gives it
    assert {d: [x["id"] for x in v] for d, v in refilled.items()} == {"a": ["a0", "a1", "a2"], "b": ["b0"],
                                                                      "c": ["c0", "c1"]}
    assert [len(v) for v in cands.values()] == [3, 1, 4]  # the candidates are not consumed


@given(sizes=st.lists(st.lists(st.integers(1, 50), max_size=8), min_size=1, max_size=4), cap=st.integers(1, 120))
def test_fill_shares_takes_prefixes_and_refill_only_adds(sizes: list[list[int]], cap: int) -> None:
    cands = {f"s{k}": _docs_of(v, f"s{k}") for k, v in enumerate(sizes)}
    plain = _PRESELECT.fill_shares(cands, cap, refill=False)
    refilled = _PRESELECT.fill_shares(cands, cap, refill=True)
    chars = {k: [len(d["text"]) for d in v] for k, v in cands.items()}
    for k in cands:
        n, m = len(plain[k]), len(refilled[k])
        assert plain[k] == cands[k][:n] and refilled[k] == cands[k][:m] and m >= n
        assert sum(chars[k][: n - 1]) < cap and (n == len(cands[k]) or sum(chars[k][:n]) >= cap)
    total = sum(len(d["text"]) for v in refilled.values() for d in v)
    plain_total = sum(len(d["text"]) for v in plain.values() for d in v)
    assert total >= min(cap * len(cands), sum(map(sum, chars.values())))
    # refill overshoots the pool's size by less than one document, and adds nothing when no source is short
    assert total < max(plain_total, cap * len(cands)) + max([1, *map(max, filter(None, chars.values()))])
    if all(sum(v) >= cap for v in chars.values()):
        assert refilled == plain


def test_pick_base_keeps_the_first_base_under_the_level_and_stops_when_none_is() -> None:
    mod = _load("preselect_effect")
    devs = {0: 2.9, 1000: 2.7, 2000: 2.6}
    trained: list[int] = []

    def train(name: str, steps: int, seed: int, extra: list[str], lr: float) -> Path:
        trained.append(seed)
        return Path(f"/ck/{seed}")

    def evaluate(ck: Path, split: str) -> dict:
        seed = int(ck.name)
        return {"all": {"loss": devs[seed] + (0.05 if split == "target_test" else 0.0)}}

    p = {"base_tries": 3, "base_steps": 10, "base_lr": 1e-3, "base_max_dev": 2.75}
    res: dict = {}
    assert mod.pick_base(train, evaluate, p, 0, res) == Path("/ck/1000") and trained == [0, 1000]
    assert res["base"]["seed"] == 1000 and math.isclose(res["base"]["target_loss"], 2.75)
    assert [t["target_dev_loss"] for t in res["base"]["tries"]] == [2.9, 2.7]
    with pytest.raises(mod.Stopped, match="no base reached target dev loss 2.5 in 3 tries"):
        mod.pick_base(train, evaluate, {**p, "base_max_dev": 2.5}, 0, {})


@pytest.mark.slow
def test_preselect_effect_stops_at_its_deadline_and_writes_what_finished(tmp_path: Path) -> None:
    # the GPU scale's promise (--device cuda stops by itself at 8 minutes): past the deadline no training run
    # starts, and the results, report and tables of what did finish are still written
    res = _load("preselect_effect").main(["--out", str(tmp_path), "--quick", "--deadline-min", "0"])
    assert not res["finished"] and res["stopped_at_deadline_min"] == 0
    assert res["arms"] and all(not r["seeds"] for recs in res["arms"].values() for r in recs)
    assert len(res["family"]) == 24 and res["labels"]["docs"] > 0  # everything before the arms finished
    assert "nothing to compare" in res["analysis"]["note"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["stopped_at_deadline_min"] == 0 and saved["finished"] is False
    assert "stopped at the deadline" in (tmp_path / "report.md").read_text()
    assert not list((tmp_path / "train").glob("random*"))  # no arm run was started


@pytest.mark.slow
def test_preselect_effect_quick_runs_the_loop(tmp_path: Path) -> None:
    res = _load("preselect_effect").main(["--out", str(tmp_path), "--quick"])
    assert res["finished"], res.get("stopped")
    assert set(res["arms"]) == {"random", "preselect", "domain_matched", "preselect_direct", "moore_lewis", "dclm",
                                "perplexity"}
    assert [len(res["arms"][a]) for a in ("random", "preselect", "domain_matched")] == [5, 3, 3]
    assert len(res["family"]) == 24 and res["family_tau"] is not None  # 6 models x 4 seeds
    # the family differs in data: the base continued on six mixes, the same steps each
    assert [m["mix"] for m in res["family"][:6]] == ["natural", "python_docs", "code", "readme", "license", "changelog"]
    assert all(m["steps"] == res["params"]["family_steps"] for m in res["family"])
    assert res["base"]["tries"][0]["seed"] == 0 and math.isfinite(res["base"]["target_dev_loss"])
    # the labels average each model's two order seeds: 12 loss columns, 6 models with one replica each
    ps = json.loads((tmp_path / "pipelines" / "labels.json").read_text())["stages"][-1]
    assert ps["stage"] == "predictive_strength_v1" and [m["replicas"] for m in ps["models"]] == [[f"m{k}s1"] for k in range(6)]
    assert [m["score"] for m in ps["models"]] == res["family_scores"]["order"]
    pool_chars = sum(res["pool"]["by_domain"].values())
    for arm, recs in res["arms"].items():
        for sel, rec in zip(res["selections"][arm], recs):
            assert 0 < sel["chars"] < pool_chars and math.isfinite(sel["junk_retention"]), arm
            assert len(rec["seeds"]) == res["params"]["seeds"], arm
            assert all(math.isfinite(s["target_loss"]) and math.isfinite(s["general_loss"]) for s in rec["seeds"]), arm
            # every target test page is scored: the token count is the test set's size in bytes plus nothing capped
            assert all(s["target_tokens"] >= res["sources"]["target"]["test_chars"] for s in rec["seeds"]), arm
    # domain-matched arms train on random documents at PreSelect's proportions
    assert [s["run"] for s in res["selections"]["domain_matched"]] == [s["run"] for s in res["selections"]["random"][:3]]
    # random selections are stratified: every source keeps its share of the pool, within a document or so
    random_run = json.loads((tmp_path / "pipelines" / "sel_random0.json").read_text())["stages"][-1]
    assert random_run["group_by"] == "domain" and random_run["boundary"] == "nearest"
    pool = _load("preselect_effect")._docs(tmp_path / "runs" / "pool", ["domain", "n_chars"])
    for sel in res["selections"]["random"]:  # each source's share lands on the document boundary nearest it
        for d, c in res["pool"]["by_domain"].items():
            biggest = int(pool["n_chars"][pool["domain"] == d].max())
            assert abs(sel["by_domain"].get(d, 0) - res["params"]["keep"] * c) <= biggest / 2 + 1, (sel["name"], d)
    a = res["analysis"]
    assert set(a["contrasts"]) == set(res["arms"]) - {"random"} and len(a["gates"]) == 5
    assert "preselect vs domain_matched" in a["decisions"] and "ci95" in a["beyond_domain"]
    assert all(d in ("positive", "negative", "negative (worse than random)", "inconclusive") or d.startswith("gates failed")
               for d in a["decisions"].values())
    assert a["mde"] > 0 and a["mde_aa"] > 0 and len(res["mechanism"]["clusters"]) >= 2
    assert all("teaching" in c for c in res["mechanism"]["clusters"])
    assert (tmp_path / "contrasts.png").stat().st_size > 5_000 and "| preselect |" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_cmr_holdout_quick_scores_both_experiments_on_held_out_documents(tmp_path: Path) -> None:
    import gzip

    import numpy as np

    mod = _load("cmr_holdout")
    res = mod.main(["--out", str(tmp_path), "--quick", "--experiment", "both"])
    # held out means held out: no document id of either evaluation half is a training document
    ids: dict[str, set[str]] = {}
    for k in ("train", "heldout_a", "heldout_b"):
        with gzip.open(tmp_path / "splits" / f"{k}.jsonl.gz", "rt") as fh:
            ids[k] = {json.loads(x)["id"] for x in fh}
    assert ids["heldout_a"] and ids["heldout_b"] and not (ids["train"] & (ids["heldout_a"] | ids["heldout_b"]))
    assert all(res["prepare"]["base_loss"][d]["tokens"] > 1000 for d in (mod.GENERAL, mod.DOMAIN))
    for name in ("critical", "extrapolate"):
        r = res[name]
        dom = np.array(r["d_dom"] if name == "critical" else [r["d_dom"][t] for t in r["steps"]])
        assert dom.shape[-1] == len(r["seeds"]) == 2 and (dom < 0).all()  # training on code lowers held-out code loss
        e = r["r_star_emp"]
        assert e["ci_low"] <= e["r_star"] <= e["ci_high"] and min(r["ratios"]) <= r["r_star_pred"] <= max(r["ratios"])
        for h in r["held_out"]:  # z is the error in units of the seed mean's standard error
            se = r["noise"]["seed_sd_gen"] / math.sqrt(len(r["seeds"]))
            assert h["gen"]["z"] == pytest.approx((h["gen"]["pred"] - h["gen"]["mean"]) / se)
        v = r["verdicts"]
        assert v["outcome"] == ("inconclusive (a gate failed)" if not all(v["gates"].values()) else
                                "pass" if v["r_star_within_tolerance"] and v["held_out_dl_all_pass"] else "fail")
        assert (tmp_path / f"cmr_{name}.png").stat().st_size > 10_000
    assert [h["ratio"] for h in res["critical"]["held_out"]] == [0.5, 0.6, 0.7]
    assert res["extrapolate"]["fit_steps"] == [2, 4, 8] and res["extrapolate"]["predicted_steps"] == 16
    assert "R*_emp" in (tmp_path / "table.md").read_text()
    # the noise split: ratio effects plus per-seed offsets and nothing else leave no within-seed noise
    x = np.array([0.0, 0.1, 0.2])[:, None] + np.array([0.0, 0.03, -0.03])[None, :]
    nz = mod.noise({f"{k}_{part}": x for k in ("gen", "dom") for part in ("all", "a", "b")})
    assert nz["seed_offset_sd_gen"] == pytest.approx(0.03) and nz["within_seed_sd_gen"] == pytest.approx(0.0, abs=1e-12)
    assert nz["seed_sd_gen"] == pytest.approx(0.03) and nz["eval_sd_gen"] == 0.0
    # round 2 on the same --out: every dL paired to the same seed's R = 0 run, scored on seeds that did not set eps
    r2 = mod.main(["--out", str(tmp_path), "--quick", "--experiment", "round2"])
    q = mod.PARAMS["quick"]["round2"]
    assert r2["eps_rule"]["seeds"] == q["calibration_seeds"] and not set(q["calibration_seeds"]) & set(q["seeds"])
    assert r2["eps_rule"]["eps"] == round(float(np.mean(list(r2["eps_rule"]["paired_gen_at_ratio"].values()))), 3)
    exp = mod.Experiment(tmp_path, mod.PARAMS["quick"], None)  # only reads the stored evaluations
    gen = lambda t, r, s: exp.losses(tmp_path / "runs" / f"T{t}_r{r:g}_s{s}")[mod.GENERAL]["all"]  # noqa: E731
    c = r2["critical"]
    assert c["paired"] and c["seeds"] == q["seeds"] and c["eps"] == r2["eps_rule"]["eps"]
    for i, r in enumerate(c["ratios"]):
        for j, s in enumerate(c["seeds"]):  # dL_mix = L(R) - L(R = 0), same budget and seed; the base cancels
            assert c["d_gen"][i][j] == pytest.approx(gen(c["steps"], r, s) - gen(c["steps"], 0, s), abs=1e-12)
    for name in ("critical", "extrapolate"):
        e = r2[name]["r_star_emp"]
        assert len(e["per_seed"]) == len(q["seeds"]) and e["ci_low"] <= e["r_star"] <= e["ci_high"]
        assert (tmp_path / f"cmr_round2_{name}.png").stat().st_size > 10_000
    assert "R = 0 run" in (tmp_path / "table_round2.md").read_text()
    # the power pilot on the same --out: each schedule its own config and runs folder (round 1's never reused)
    pw = mod.main(["--out", str(tmp_path), "--quick", "--experiment", "power"])["power"]
    for row, (lr, warmup) in zip(pw["rows"], pw["schedules"]):
        tag = f"lr{lr:g}_w{warmup}"
        cpt = json.loads((tmp_path / f"cpt_{tag}.json").read_text())
        assert cpt["schedule"]["lr"] == lr and cpt["schedule"]["warmup_steps"] == warmup
        gen_w = lambda r, s: exp.losses(tmp_path / f"runs_{tag}" / f"T{pw['steps']}_r{r:g}_s{s}")[mod.GENERAL]["all"]  # noqa: E731,B023
        base = exp.losses(tmp_path / "base")[mod.GENERAL]["all"]
        assert row["d_gen"][0][1] == pytest.approx(gen_w(pw["ratios"][0], pw["seeds"][1]) - base, abs=1e-12)
        d = np.array(row["d_gen"])
        assert row["slope_gen_per_r"] == pytest.approx((d[-1] - d[0]).mean() / 0.3)
    assert "seeds needed" in (tmp_path / "power.md").read_text()
    # power2: a stratified general stream trains each source at a fixed share of the general tokens
    p2 = mod.main(["--out", str(tmp_path), "--quick", "--experiment", "power2"])["power2"]
    strat = [r for r in p2["rows"] if r["stratified"]]
    assert strat and any(r["batch_size"] != mod.PARAMS["quick"]["batch_size"] for r in strat)
    cfg = json.loads((tmp_path / "cpt_lr0.0003_w2_strat.json").read_text())
    assert cfg["data"]["runs"] == [str(tmp_path / "corpus" / "train_strat")]
    run_dir = tmp_path / "runs_lr0.0003_w2_strat" / f"T{p2['steps']}_r0.45_s0"
    with open(run_dir / "log.jsonl") as fh:  # the run's first log record is its resolved config
        mix = json.loads(fh.readline())["config"]["data"]["ratios"]
    chars = {d: v["chars"] for d, v in json.loads((tmp_path / "corpus" / "train_strat" / "manifest.json")
                                                 .read_text())["domains"].items()}
    total = sum(chars[d] for d in mod.GENERAL_SOURCES)
    assert mix["code"] == pytest.approx(0.45) and set(mix) == {"code", *mod.GENERAL_SOURCES}
    for d in mod.GENERAL_SOURCES:
        assert mix[d] == pytest.approx(0.55 * chars[d] / total, abs=1e-6)
    assert exp.losses(run_dir)[mod.GENERAL]["tokens"] > 0  # evaluated on the same held-out general text
    # round 3: unpaired changes on the stratified stream, eps from the calibration seeds only
    r3 = mod.main(["--out", str(tmp_path), "--quick", "--experiment", "round3"])
    q3 = mod.PARAMS["quick"]["round3"]
    runs3 = tmp_path / "runs_lr0.001_w2_strat"
    base = exp.losses(tmp_path / "base")[mod.GENERAL]["all"]
    gen3 = lambda t, r, s: exp.losses(runs3 / f"T{t}_r{r:g}_s{s}")[mod.GENERAL]["all"] - base  # noqa: E731
    want_eps = np.mean([np.mean([gen3(t, q3["eps_ratio"], s) for s in q3["calibration_seeds"]]) for t in q3["eps_steps"]])
    assert r3["eps_rule"]["eps"] == pytest.approx(round(float(want_eps), 3))
    c3 = r3["critical"]
    assert not c3["paired"] and c3["seeds"] == q3["seeds"] and not set(c3["seeds"]) & set(q3["calibration_seeds"])
    assert c3["d_gen"][0][1] == pytest.approx(gen3(c3["steps"], c3["ratios"][0], c3["seeds"][1]), abs=1e-12)
    assert len(c3["r_star_emp"]["per_seed"]) == len(q3["seeds"])  # bootstrapped over whole seeds
    assert (tmp_path / "cmr_round3_extrapolate.png").stat().st_size > 10_000 and (tmp_path / "table_round3.md").exists()
    # round 4: each experiment's eps is the calibration seeds' mean at that experiment's own scored budget
    r4 = mod.main(["--out", str(tmp_path), "--quick", "--experiment", "round4"])
    q = mod.PARAMS["quick"]
    for name, t in (("critical", q["critical"]["steps"]), ("extrapolate", max(q["extrapolate"]["steps"]))):
        want = np.mean([gen3(t, q["round4"]["eps_ratio"], s) for s in q["round4"]["calibration_seeds"]])
        assert r4[name]["eps"] == pytest.approx(round(float(want), 3)) and r4[name]["seeds"] == q["round4"]["seeds"]
    # the interval of R* is ~2 x 1.96 SE / slope wide: SD 0.03, slope 0.12 per unit R -> (3.92 x 0.03 / 0.012)^2
    assert mod.seeds_needed(0.03, 0.12) == pytest.approx(96.04) and mod.seeds_needed(0.03, -0.1) == math.inf
