"""The planner: its sample (deterministic, coordinated), its arithmetic, and `--budget-cpu-hours` refusing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curation.cli import app as cli
from curation.errors import ConfigError
from curation.pipeline import PipelineConfig
from curation.planner import (Cluster, GlobalMeasure, Measurement, PassMeasure, budget_refusal,
                              bootstrap_rel_range, doc_key, extrapolate, measure, nlogn_factor, parse_cluster,
                              parse_rate, proportion_range, sample_file, split_probe, merge_small, least_time, FileSample,
                              RAY_PASS_OVERHEAD_S,
                              RAY_DATA_STEP_S, RAY_SHUFFLE_CPU_FACTOR, RAY_SHUFFLE_OP_S, RAY_START_S,
                              TIME_NOISE_FLOOR)
from tests.conftest import PROSE, pipeline_dict, write_jsonl


def approx(x: object, **kw: object) -> object:
    """Step figures are rounded to 0.01 s for display."""
    return pytest.approx(x, **({"abs": 0.011} | kw))  # type: ignore[arg-type]


def measurement(**kw: object) -> Measurement:
    """A sample of 1,000 docs / 1 MB out of 100,000 docs / 100 MB in 10 files of 10 MB."""
    base = dict(
        rate=0.01, full_docs=100_000, full_bytes=100_000_000, file_bytes=[10_000_000] * 10, sample_docs=1000,
        sample_bytes=1_000_000, docs_out=600, tokens_out=150_000,
        passes=[PassMeasure(0, [2.0, 2.0], [500_000, 500_000], 1.0, {"text_length_v1": 4.0}),
                PassMeasure(1, [1.0, 1.0], [500_000, 500_000], 0.0, {})],
        globals=[GlobalMeasure("exact_dedup_v1", 0.5, 1000, 10_000)],
        stage_kept=[("input", 1000, 1000), ("text_length_v1", 1000, 600)], executor="ray")
    base.update(kw)
    return Measurement(**base)  # type: ignore[arg-type]


def test_map_work_scales_with_bytes_and_wall_with_workers() -> None:
    pred = extrapolate(measurement(), Cluster(cpus=4))
    p0, p1, g = pred.steps
    # pass 0: 4 s per MB of sample -> 400 CPU-s; 4 workers also each load the models once (1 s).
    assert p0["cpu_s"] == approx(400 + 4 * 1.0)
    assert p0["workers"] == 4 and p0["wall_s"] == approx(400 / 4 + 1.0 + RAY_PASS_OVERHEAD_S)
    assert p1["cpu_s"] == approx(200) and p1["wall_s"] == approx(200 / 4 + RAY_PASS_OVERHEAD_S)
    # global: n log n in the documents reaching it (1,000 -> 100,000), in the driver (1 MB of keys).
    assert g["cpu_s"] == approx(0.5 * 100_000 * math.log(100_000) / (1000 * math.log(1000)))
    assert g["workers"] == 1 and g["wall_s"] == approx(g["cpu_s"])
    assert pred.cpu_hours == approx((p0["cpu_s"] + p1["cpu_s"] + g["cpu_s"]) / 3600)
    assert pred.wall_seconds == approx(p0["wall_s"] + p1["wall_s"] + g["wall_s"] + RAY_START_S)
    assert pred.kept_docs == 60_000 and pred.kept_tokens == 15_000_000
    assert p0["stages"] == {"text_length_v1": 400.0}


def test_wall_is_bounded_by_files_and_the_largest_file() -> None:
    # 64 CPUs but 10 files: at most 10 workers; one 60 MB file of 100 MB bounds the pass.
    pred = extrapolate(measurement(file_bytes=[60_000_000] + [40_000_000 / 9] * 9), Cluster(cpus=64))
    p0 = pred.steps[0]
    assert p0["workers"] == 10
    assert p0["wall_s"] == approx(4e-6 * 60_000_000 + 1.0 + RAY_PASS_OVERHEAD_S)  # 240 s, not 400/10
    local = extrapolate(measurement(executor="local"), Cluster(cpus=64))
    assert local.steps[0]["workers"] == 1 and local.steps[0]["wall_s"] == approx(401.0)
    assert local.wall_seconds == approx(sum(s["wall_s"] for s in local.steps))  # no Ray overheads


def test_big_global_step_shuffles_on_the_cluster() -> None:
    m = measurement(globals=[GlobalMeasure("near_dedup_v1", 2.0, 1000, 5_000_000, ray_ops=11)])  # 500 MB of keys
    pred = extrapolate(m, Cluster(cpus=8, nodes=2))
    g = pred.steps[-1]
    assert g["key_mb"] == approx(500) and g["workers"] == 16
    # a shuffle costs RAY_SHUFFLE_CPU_FACTOR x the in-process step's CPU, spread over the cluster
    in_process = 2.0 * nlogn_factor(1000, 100_000)
    assert g["cpu_s"] == approx(RAY_SHUFFLE_CPU_FACTOR * in_process)
    # each of its 11 Ray Data executions pays a fixed cost, then the work spreads over the 16 CPUs
    assert g["wall_s"] == approx(11 * RAY_SHUFFLE_OP_S + g["cpu_s"] / 16 + RAY_DATA_STEP_S)
    local = extrapolate(measurement(globals=m.globals, executor="local"), Cluster(cpus=16))
    assert local.steps[-1]["cpu_s"] == approx(in_process) and local.steps[-1]["wall_s"] == approx(in_process)


def test_gpu_passes_count_gpu_hours_and_gpu_parallelism() -> None:
    m = measurement(passes=[PassMeasure(0, [2.0, 2.0], [500_000, 500_000], 0.0, {}, gpus_per_task=1.0)])
    pred = extrapolate(m, Cluster(cpus=32, gpus=2))
    assert pred.steps[0]["workers"] == 2 and pred.gpu_hours == approx(400 / 3600)
    none = extrapolate(m, Cluster(cpus=32, gpus=0))
    assert any("GPU" in n for n in none.notes)


def test_ranges_come_from_the_sample() -> None:
    lo, hi = proportion_range(0.6, 1000)
    assert lo == approx(0.6 - 1.96 * math.sqrt(0.24 / 1000)) and hi == approx(0.6 + 1.96 * math.sqrt(0.24 / 1000))
    pred = extrapolate(measurement(), Cluster(cpus=4))
    assert pred.kept_docs_range == (round(lo * 100_000), round(hi * 100_000))
    assert pred.cpu_hours_range[0] < pred.cpu_hours < pred.cpu_hours_range[1]
    # identical tasks: only the noise floor; very uneven ones: wider than it
    floor = (1 - TIME_NOISE_FLOOR, 1 + TIME_NOISE_FLOOR)
    assert bootstrap_rel_range([1.0] * 8, [100] * 8) == approx(floor)
    lo, hi = bootstrap_rel_range([1, 9, 1, 9, 1, 9], [100] * 6)
    assert lo < floor[0] and hi > floor[1]
    assert nlogn_factor(1000, 1000) == approx(1.0) and nlogn_factor(0, 10) == 0.0


def test_empty_sample_is_an_error() -> None:
    with pytest.raises(ConfigError, match="raise --sample"):
        extrapolate(measurement(sample_docs=0, sample_bytes=0), Cluster(cpus=1))


def test_cluster_and_rate_parsing() -> None:
    assert parse_cluster("cpus=16,gpus=2,nodes=3") == Cluster(16, 2, 3)
    assert parse_cluster("cpus=4").total_cpus == 4
    with pytest.raises(ConfigError, match="unknown key 'tpus'"):
        parse_cluster("tpus=4")
    with pytest.raises(ConfigError, match="cpus=0 must be >= 1"):
        parse_cluster("cpus=0")
    assert parse_rate("1%") == approx(0.01) and parse_rate("0.25") == 0.25
    for bad in ("0", "150%", "x"):
        with pytest.raises(ConfigError):
            parse_rate(bad)


def test_budget_refusal_line() -> None:
    pred = extrapolate(measurement(), Cluster(cpus=4))
    assert budget_refusal(pred, 1.0) is None
    line = budget_refusal(pred, 0.01)
    assert line is not None and "\n" not in line and "exceeds --budget-cpu-hours 0.01" in line
    assert f"{pred.cpu_hours:.3g} CPU-hours" in line


def test_sample_is_deterministic_uniform_and_keeps_duplicates_together(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(5000)]
    recs = []
    for i in range(2000):
        text = " ".join(words[(i * 7 + j * 13) % 5000] for j in range(40))
        recs.append({"id": f"d{i}", "text": text})
        if i % 4 == 0:
            recs.append({"id": f"d{i}-copy", "text": text})
    write_jsonl(tmp_path / "in.jsonl", recs)
    cfg = PipelineConfig.from_mapping(pipeline_dict([str(tmp_path / "in.jsonl")], tmp_path / "out"))
    outs = []
    for k in range(2):
        (tmp_path / f"s{k}").mkdir()
        outs.append(sample_file(str(tmp_path / "in.jsonl"), "in.jsonl", cfg, 0.2, tmp_path / f"s{k}"))
    assert Path(outs[0].sample_path).read_bytes() == Path(outs[1].sample_path).read_bytes()
    fs = outs[0]
    assert fs.docs == 2500 and abs(fs.sample_docs / fs.docs - 0.2) < 0.04
    ids = {json.loads(x)["id"] for x in Path(fs.sample_path).read_text().splitlines()}
    pairs = [i for i in range(0, 2000, 4) if f"d{i}" in ids]
    assert pairs and all(f"d{i}-copy" in ids for i in pairs)  # an exact duplicate comes with its original
    near = doc_key(" ".join(words[:200])) == doc_key(" ".join(words[:199] + ["zzz"]))
    assert near  # one changed word out of 200 rarely moves the minimum shingle


def test_measure_runs_the_real_pipeline_on_the_sample(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = PipelineConfig.from_mapping(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "out"))
    m = measure(cfg, 1.0, tmp_path / "work")  # the whole input: the sample run is the real run
    assert m.full_docs == m.sample_docs == 7 and m.docs_out == 4
    assert [s for s, _, _ in m.stage_kept] == ["input", "text_length_v1", "exact_dedup_v1"]
    # three input files, whose samples (under a batch of 4 documents each) are merged into two
    # tasks, plus the probe task (not an input file, not in the task lists)
    assert len(m.passes) == 2 and len(m.passes[0].task_seconds) == 2 and len(m.file_bytes) == 3
    assert all(p.probe_seconds is not None and 0 <= p.probe_seconds <= max(p.task_seconds) for p in m.passes)
    assert "text_length_v1" in m.passes[0].stage_seconds
    assert m.globals[0].stage == "exact_dedup_v1" and m.globals[0].docs_in == 6
    assert m.globals[0].ray_ops == 1  # its Ray Data executions, counted on the sample (one group by hash)
    assert not (tmp_path / "out").exists()  # the configured output dir is never touched
    from curation.executors.plan import _SET_UP

    # The sample run's set-up stages (models) are let go once it is measured, not kept for the process's life.
    assert not [k for k in _SET_UP if str(tmp_path / "work") in k[0]]


def test_each_task_counts_with_its_least_time_over_the_repeats() -> None:
    first = {(0, 0): (0.13, {"0": 0.1}), (0, 1): (0.05, {"0": 0.04}), (1, 0): (0.2, {})}
    second = {(0, 0): (0.06, {"0": 0.05}), (0, 1): (0.07, {"0": 0.06}), (1, 0): (0.2, {})}
    # per task, not per run: task (0, 0) from the second run, (0, 1) from the first, with its stage seconds
    assert least_time([first, second]) == {(0, 0): (0.06, {"0": 0.05}), (0, 1): (0.05, {"0": 0.04}), (1, 0): (0.2, {})}
    assert least_time([first]) == first


def test_the_sample_runs_twice_without_rephrasing(tiny_corpus: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import curation.planner.measurement as measurement

    runs: list[int] = []
    real = measurement._task_timings
    monkeypatch.setattr(measurement, "_task_timings", lambda plan: runs.append(1) or real(plan))
    cfg = PipelineConfig.from_mapping(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "out"))
    measure(cfg, 1.0, tmp_path / "work")
    assert len(runs) == measurement.SAMPLE_REPEATS == 2


def _config_file(tmp_path: Path, corpus: Path) -> Path:
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline_dict([str(corpus / "*")], tmp_path / "run")))
    return path


def test_run_refuses_over_budget_before_any_work(tiny_corpus: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["run", str(_config_file(tmp_path, tiny_corpus)), "--budget-cpu-hours", "1e-12"])
    assert res.exit_code == 2, res.output
    refusal = [line for line in res.output.splitlines() if "refused" in line]
    assert len(refusal) == 1 and "exceeds --budget-cpu-hours 1e-12" in refusal[0]
    assert not (tmp_path / "run").exists()


def test_run_within_budget_runs(tiny_corpus: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["run", str(_config_file(tmp_path, tiny_corpus)), "--budget-cpu-hours", "10"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "manifest.json").exists() and (tmp_path / "run" / "progress.json").exists()


def test_plan_command_prints_json(tiny_corpus: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["plan", str(_config_file(tmp_path, tiny_corpus)), "--sample", "100%", "--json",
                                   "--cluster", "cpus=2"])
    assert res.exit_code == 0, res.output
    pred = json.loads(res.output)
    assert pred["input_docs"] == 7 and pred["kept_docs"] == 4 and pred["cluster"]["cpus"] == 2
    res = CliRunner().invoke(cli, ["plan", str(_config_file(tmp_path, tiny_corpus)), "--sample", "100%",
                                   "--budget-cpu-hours", "1e-12"])
    assert res.exit_code == 2 and "exceeds --budget-cpu-hours" in res.output
    assert PROSE  # the corpus fixture's texts are the documents planned over


def test_fixed_task_cost_is_not_scaled_with_bytes() -> None:
    from curation.planner import task_cost_model

    secs = [0.05 + 1e-6 * b for b in (10_000, 20_000, 40_000, 80_000)]  # 50 ms per task + 1 us per byte
    a, b = task_cost_model(secs, [10_000, 20_000, 40_000, 80_000])
    assert a == approx(0.05, abs=1e-6) and b == approx(1e-6, abs=1e-9)
    m = measurement(passes=[PassMeasure(0, secs, [10_000, 20_000, 40_000, 80_000], 0.0, {})], globals=[],
                    sample_bytes=150_000)
    pred = extrapolate(m, Cluster(cpus=1))
    assert pred.steps[0]["cpu_s"] == approx(10 * 0.05 + 1e-6 * 100_000_000)  # 10 full tasks, 100 MB
    assert task_cost_model([1.0, 1.0], [5, 5]) == (0.0, 0.2)  # too few / equal tasks: all per byte


def test_similar_tasks_take_the_fixed_cost_from_the_probe_not_a_fit() -> None:
    """A 1% sample of equal files gives tasks of about one size. The old least-squares fit over them
    put 40% of their time into the fixed cost at 1M documents (predicted 30% too little); now a
    small probe task gives a second size, and without a probe all the time scales with bytes."""
    from curation.planner import task_cost_model

    nbytes = [1_150_000, 1_013_766, 1_171_001, 1_123_776, 967_886]
    secs = [0.03 + 1e-7 * b for b in nbytes]  # 30 ms per task, 0.1 us per byte
    assert task_cost_model(secs, nbytes) == approx((0.0, sum(secs) / sum(nbytes)), abs=1e-12)
    a, b = task_cost_model(secs, nbytes, probe=0.03 + 1e-7 * 40_000, probe_bytes=40_000)
    assert a == approx(0.03, abs=1e-9) and b == approx(1e-7, abs=1e-12)
    noisy = secs.copy()
    noisy[1] += 0.03  # noise that a fit over similar sizes turns into a large intercept
    assert task_cost_model(noisy, nbytes, probe=0.034, probe_bytes=40_000)[0] == approx(0.03, abs=0.002)
    assert task_cost_model(secs, nbytes, probe=99.0, probe_bytes=1)[0] == min(secs)  # never over the cheapest
    # a "probe" as large as the tasks says nothing about a: all time per byte
    assert task_cost_model(secs, nbytes, probe=0.1, probe_bytes=1_000_000) == approx(
        (0.0, sum(secs) / sum(nbytes)), abs=1e-12)


def test_pages_sharing_a_phrase_are_sampled_independently() -> None:
    """200 unrelated pages that share one stock phrase (its shingles hash lowest of all) must not share a
    sampling key: a key from one shingle put all 200 in or out of the sample together, which made a 1%
    sample's kept share and cost per byte miss the full run's by 20-30% on the scale benchmark."""
    import random
    import zlib

    from curation.planner import SHINGLE, doc_key

    rng = random.Random(0)
    # A stock phrase of one shingle whose crc32 is below (almost surely) every random shingle of the pages.
    phrase = next(p for p in (f"cookie policy notice number {i}" for i in range(1_000_000))
                  if zlib.crc32(p.encode()) < 2 ** 18)
    assert len(phrase.split()) == SHINGLE
    vocab = [f"w{i}" for i in range(5000)]
    pages = [phrase + " " + " ".join(rng.choice(vocab) for _ in range(120)) for _ in range(200)]
    assert len({doc_key(p) for p in pages}) >= 195
    assert doc_key(pages[0]) == doc_key(pages[0])  # an exact copy still shares its original's key


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_probe_is_sampled_documents_moved_not_copied(tmp_path: Path, fmt: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [{"id": f"d{i}", "text": "word " * (50 - i)} for i in range(6)]
    src = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        write_jsonl(src, recs)
    else:
        pq.write_table(pa.Table.from_pylist(recs), src)
    cfg = PipelineConfig.from_mapping(pipeline_dict([str(src)], tmp_path / "out"))
    (tmp_path / "s").mkdir()
    fs = sample_file(str(src), src.name, cfg, 1.0, tmp_path / "s")
    before = (fs.sample_docs, fs.sample_bytes)
    probe = split_probe([FileSample("empty"), fs], tmp_path / "s", "text")
    assert probe is not None and probe.probe and probe.docs == 0 and probe.bytes == 0  # not an input file

    def ids(path: str) -> list[str]:
        if fmt == "jsonl":
            return [json.loads(x)["id"] for x in Path(path).read_text().splitlines()]
        return pq.read_table(path).column("id").to_pylist()

    # at most a third of the file (PROBE_DOCS when it is large), its first documents
    assert ids(probe.sample_path) == ["d0", "d1"] and ids(fs.sample_path) == ["d2", "d3", "d4", "d5"]
    assert (fs.sample_docs + probe.sample_docs, fs.sample_bytes + probe.sample_bytes) == before
    assert split_probe([FileSample("x", sample_docs=2)], tmp_path / "s", "text") is None  # none to spare


def test_sample_files_under_a_batch_are_merged_into_batch_sized_tasks(tmp_path: Path) -> None:
    """A 1% sample of 100k documents in 20 files gives 50-document tasks, which cost 2-3x more per
    byte than the full run's 5,000-document ones: the sample is merged into tasks of a batch."""
    files = []
    for k in range(5):
        path = tmp_path / f"{k:05d}.jsonl"
        path.write_bytes(b"".join(f'{{"id": "f{k}d{i}"}}\n'.encode() for i in range(3)))
        files.append(FileSample(f"in{k}", docs=300, bytes=30_000, sample_docs=3, sample_bytes=path.stat().st_size,
                                sample_path=str(path)))
    before = (sum(f.sample_docs for f in files), sum(f.sample_bytes for f in files))
    merge_small(files, batch_docs=4)
    assert [f.sample_docs for f in files] == [6, 0, 6, 0, 3]
    assert [bool(f.sample_path) for f in files] == [True, False, True, False, True]
    assert (sum(f.sample_docs for f in files), sum(f.sample_bytes for f in files)) == before
    assert [json.loads(x)["id"] for x in Path(files[2].sample_path).read_text().splitlines()] == \
        ["f2d0", "f2d1", "f2d2", "f3d0", "f3d1", "f3d2"]
    assert all(f.docs == 300 and f.bytes == 30_000 for f in files)  # the full input's figures stay per file
    assert not (tmp_path / "00001.jsonl").exists()
    merge_small(files, batch_docs=2)  # already a batch each on average: nothing changes
    assert [f.sample_docs for f in files] == [6, 0, 6, 0, 3]
