"""What a job submitted through ``curate serve`` may read, use and write: only under the operator's input roots,
never the service's environment (issue 27 items 1, 2, 11)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from curation.errors import ConfigError
from tests.conftest import PROSE, REPO, pipeline_dict, write_jsonl
from tests.security.conftest import READ_TOKEN, SUBMIT_TOKEN

SUBMIT = {"Authorization": f"Bearer {SUBMIT_TOKEN}"}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> ClientFactory:
    """Job routes (as ``jobs_client``) over settings the test chooses; Ray never comes up, so a config that passes
    every check gets 503 ("the Ray cluster is ...") and one that fails a check gets 422."""
    from fastapi import FastAPI

    from curation.service.jobs import JobError, JobManager
    from curation.service.routes_jobs import job_error, router
    from curation.service.settings import ServiceSettings

    def make(**kw: Any) -> TestClient:
        settings = ServiceSettings(runs_root=str(tmp_path / "runs"), state_dir=tmp_path / "state",
                                   ray_address="http://127.0.0.1:9", submit_tokens=frozenset({SUBMIT_TOKEN}),
                                   read_tokens=frozenset({READ_TOKEN}), **kw)
        app = FastAPI()
        app.include_router(router)
        app.add_exception_handler(JobError, job_error)  # as create_app does
        app.state.settings = settings
        app.state.jobs = JobManager(settings, ready_timeout_s=0.1)
        return TestClient(app)

    return make


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An input root with one JSONL file."""
    r = tmp_path / "inputs"
    write_jsonl(r / "a.jsonl", [{"id": "a", "text": PROSE[0], "domain": "web"}])
    return r


def _body(paths: list[str], tmp_path: Path, stages: list[dict[str, Any]] | None = None, run_id: str = "r1",
          **output: Any) -> dict[str, Any]:
    cfg = pipeline_dict(paths, tmp_path / "out", stages, **output)
    cfg["input"]["max_malformed_fraction"] = 1.0  # every unreadable line to quarantine.raw, the run "succeeds"
    return {"config_yaml": yaml.safe_dump(cfg), "run_id": run_id}


def _refused(client: TestClient, body: dict[str, Any], *needles: str) -> str:
    r = client.post("/api/runs", headers=SUBMIT, json=body)
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def _passes(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/api/runs", headers=SUBMIT, json=body)
    assert r.status_code == 503, r.text  # every check passed; only the (absent) cluster stops it


# -- item 1: inputs ----------------------------------------------------------------------------------------------


def test_submitted_inputs_outside_the_input_roots_are_refused(make_client: ClientFactory, root: Path,
                                                              tmp_path: Path) -> None:
    client = make_client(input_roots=(str(root), "s3://team-bucket/corpora/"))
    attacks = ["/etc/passwd", "/proc/self/environ", str(tmp_path / "state" / "jobs.sqlite"),
               "http://127.0.0.1:8000/api/runs", "https://evil.example/x.jsonl", "file:///etc/passwd",
               "memory://x.jsonl", f"zip://a.jsonl::file://{root}/a.jsonl", "s3://team-bucket/other/x.jsonl",
               "s3://other-bucket/corpora/x.jsonl", "s3://team-bucket/corpora/../secrets/x.jsonl",
               f"{root}/../state/jobs.sqlite", f"{root}/../*/*.sqlite", "../../../etc/passwd", "/etc/*"]
    for path in attacks:
        msg = _refused(client, _body([path], tmp_path), path, "input roots")
        assert msg.startswith("config_yaml.input.paths[0]: input path"), msg
    # The second of two paths is named by its index.
    _refused(client, _body([f"{root}/*.jsonl", "/etc/passwd"], tmp_path), "input.paths[1]", "/etc/passwd")
    assert client.get("/api/jobs", headers=READ).json() == {"jobs": []}  # nothing was recorded
    _passes(client, _body([f"{root}/*.jsonl"], tmp_path))
    _passes(client, _body(["s3://team-bucket/corpora/web/*.jsonl.zst"], tmp_path, run_id="r2"))


def test_a_symlink_inside_an_input_root_pointing_outside_is_refused(make_client: ClientFactory, root: Path,
                                                                    tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"id": "s", "text": "the service\'s secret"}\n')
    (root / "link.jsonl").symlink_to(secret)
    (root / "up").symlink_to(tmp_path)
    client = make_client(input_roots=(str(root),))
    _refused(client, _body([str(root / "link.jsonl")], tmp_path), "link.jsonl", str(secret))
    _refused(client, _body([f"{root}/*.jsonl"], tmp_path), "link.jsonl", "outside the input roots")
    _refused(client, _body([f"{root}/up/secret.jsonl"], tmp_path), "outside the input roots")
    _refused(client, _body([f"{root}/up/*.jsonl"], tmp_path), "outside the input roots")


def test_with_no_input_root_submitted_jobs_read_only_the_sample_corpus(make_client: ClientFactory,
                                                                       tmp_path: Path) -> None:
    """The default: the bundled sample corpus (public, part of the code) by relative or absolute path; nothing
    else. ``--no-sample-inputs`` (sample_inputs=False) with no root: nothing at all, and the 422 says so."""
    client = make_client()
    _passes(client, _body(["curation/data/sample/*.jsonl.gz"], tmp_path))
    _passes(client, _body([f"{REPO}/curation/data/sample/*.jsonl.gz"], tmp_path, run_id="r2"))
    _refused(client, _body(["curation/*.py"], tmp_path), "curation/*.py", "--input-root")
    client = make_client(sample_inputs=False)
    _refused(client, _body(["curation/data/sample/*.jsonl.gz"], tmp_path), "read nothing", "--input-root")


def test_an_input_root_holding_the_state_dir_is_refused(tmp_path: Path) -> None:
    from curation.service.settings import ServiceSettings

    with pytest.raises(ConfigError, match="state dir"):
        ServiceSettings(runs_root=str(tmp_path / "runs"), state_dir=tmp_path / "state", input_roots=(str(tmp_path),))
    for bad in ("http://host/x/", "file:///data", "s3://", "s3://b/x*/"):
        with pytest.raises(ConfigError, match="--input-root"):
            ServiceSettings(runs_root=str(tmp_path / "runs"), state_dir=tmp_path / "state", input_roots=(bad,))


def test_the_job_refuses_a_symlink_planted_after_submission(root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's driver confines its own input expansion to the roots it was given: a symlink that appears in a
    root after the submission check is refused where the job expands its inputs. ``curate run`` is not confined."""
    from curation.io.inputs import expand_inputs
    from curation.job_driver import job_main
    from curation.service.jobs import INPUT_ROOTS_ENV, PIPELINE_ENV, RUN_ID_ENV

    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"id": "s", "text": "x"}\n')
    monkeypatch.setenv(PIPELINE_ENV, "name: x\n")
    monkeypatch.setenv(RUN_ID_ENV, "r1")
    monkeypatch.setenv(INPUT_ROOTS_ENV, json.dumps([str(root)]))
    seen: list[int] = []

    def run(_args: list[str]) -> None:
        seen.append(len(expand_inputs([f"{root}/*.jsonl"])))  # fine before the plant
        (root / "late.jsonl").symlink_to(secret)
        with pytest.raises(ConfigError, match="late.jsonl.*outside the input roots"):
            expand_inputs([f"{root}/*.jsonl"])
        with pytest.raises(ConfigError, match="outside the input roots"):
            expand_inputs([str(secret)])
        with pytest.raises(ConfigError, match="scheme http"):
            expand_inputs(["http://127.0.0.1:9/x.jsonl"])

    job_main([], run=run)
    assert seen == [1]
    assert len(expand_inputs([f"{root}/*.jsonl", str(secret)])) == 3  # outside a job: curate run reads anything
    monkeypatch.delenv(INPUT_ROOTS_ENV)  # a driver told no roots reads nothing

    def run_nothing(_args: list[str]) -> None:
        with pytest.raises(ConfigError, match="read nothing"):
            expand_inputs([f"{root}/a.jsonl"])

    job_main([], run=run_nothing)


# -- item 1: the job's environment --------------------------------------------------------------------------------


def test_the_job_environment_is_an_allowlist_without_the_service_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.service.local_ray import job_env

    env = {"PATH": "/usr/bin", "HOME": "/home/svc", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONPATH": "/code",
           "HF_HUB_OFFLINE": "1", "AWS_REGION": "eu-west-1", "CURATE_SERVE_SUBMIT_TOKENS": "submit-secret-token-1",
           "CURATE_SERVE_READ_TOKENS": "read-secret-token-12", "OPENAI_API_KEY": "sk-service", "GITHUB_TOKEN": "gh",
           "RAY_AUTH_TOKEN": "ray", "RAY_ADDRESS": "http://elsewhere:8265", "CURATION_FAULT": "raise:0:0",
           "DATABASE_URL": "postgres://u:p@h/db"}
    out = job_env(env)
    assert out == {k: env[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "HF_HUB_OFFLINE", "AWS_REGION")}
    # An operator-allowed secret variable is passed; the service's own tokens never, even if named.
    out = job_env(env, ("OPENAI_API_KEY", "CURATE_SERVE_SUBMIT_TOKENS"))
    assert out["OPENAI_API_KEY"] == "sk-service" and not any(k.startswith("CURATE_SERVE_") for k in out)


def test_the_local_ray_head_gets_the_allowlisted_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through ``LocalRay.start`` (the head every local job inherits its environment from), with ``ray start``
    replaced by a process that exits at once."""
    from curation.errors import CurationError
    from curation.service import local_ray

    monkeypatch.setenv("CURATE_SERVE_SUBMIT_TOKENS", "submit-secret-token-1")
    monkeypatch.setenv("CURATE_SERVE_READ_TOKENS", "read-secret-token-12")
    monkeypatch.setenv("SOME_SERVICE_PASSWORD", "hunter2hunter2")
    seen: list[dict[str, str]] = []

    class Exited:
        pid = 2**22 + 12345  # no such process

        def __init__(self, args: list[str], env: dict[str, str], **_: Any) -> None:
            seen.append(env)

        def poll(self) -> int:
            return 1

    monkeypatch.setattr(local_ray.subprocess, "Popen", Exited)
    with pytest.raises(CurationError, match="did not start"):
        local_ray.LocalRay(tmp_path / "ray", timeout_s=5).start()
    (env,) = seen
    assert not any(k.startswith("CURATE_SERVE_") for k in env) and "SOME_SERVICE_PASSWORD" not in env
    assert env["RAY_AUTH_MODE"] == "token" and env["PATH"].startswith(os.path.dirname(os.sys.executable))


# -- item 2: secrets and backend hosts ----------------------------------------------------------------------------


def _rephrase(base_url: str, **backend: Any) -> list[dict[str, Any]]:
    return [{"stage": "rephrase_v1", "templates": ["wrap_medium"],
             "backend": {"kind": "openai", "model": "m", "base_url": base_url, **backend}}]


SAMPLE = ["curation/data/sample/*.jsonl.gz"]


def test_a_submitted_config_may_name_only_an_allowed_secret_variable(make_client: ClientFactory,
                                                                     tmp_path: Path) -> None:
    """``api_key_env: CURATE_SERVE_SUBMIT_TOKENS`` would send the service's submit tokens as the API key."""
    client = make_client(allow_backend_hosts=("llm.internal:8000",), allow_secret_env=("TEAM_LLM_KEY",))
    url = "http://llm.internal:8000/v1"
    for name in ("CURATE_SERVE_SUBMIT_TOKENS", "CURATE_SERVE_READ_TOKENS", "AWS_SECRET_ACCESS_KEY", "HOME"):
        _refused(client, _body(SAMPLE, tmp_path, _rephrase(url, api_key_env=name)),
                 "config_yaml.stages[0] (rephrase_v1).backend.api_key_env", name, "--allow-secret-env")
    # Left out, api_key_env is OPENAI_API_KEY: not allowed here either.
    _refused(client, _body(SAMPLE, tmp_path, _rephrase(url)), "backend.api_key_env", "OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="CURATE_SERVE"):
        make_client(allow_secret_env=("CURATE_SERVE_SUBMIT_TOKENS",))


def test_a_submitted_config_may_reach_only_an_allowed_backend_host(make_client: ClientFactory,
                                                                   tmp_path: Path) -> None:
    client = make_client(allow_backend_hosts=("llm.internal:8000", "gpu-box"), allow_secret_env=("TEAM_LLM_KEY",))
    for url in ("http://evil.example/v1", "https://evil.example:8000/v1", "http://llm.internal:9999/v1",
                "http://llm.internal:8000@evil.example/v1", "http://evil.example\\@llm.internal:8000/v1",
                "http://llm.internal.evil.example:8000/v1", "file:///etc/passwd", "ftp://llm.internal:8000/",
                "http://127.0.0.1:8000/v1"):
        _refused(client, _body(SAMPLE, tmp_path, _rephrase(url, api_key_env="TEAM_LLM_KEY")),
                 "config_yaml.stages[0] (rephrase_v1).backend.base_url")
    _refused(client, _body(SAMPLE, tmp_path, _rephrase("http://evil.example/v1", api_key_env=None)),
             "backend.base_url", "evil.example:80", "--allow-backend-host")
    _refused(make_client(), _body(SAMPLE, tmp_path, _rephrase("http://llm.internal:8000/v1", api_key_env=None)),
             "allowed: none")


def test_an_allowed_secret_and_backend_host_pass_validation(make_client: ClientFactory, tmp_path: Path) -> None:
    client = make_client(allow_backend_hosts=("llm.internal:8000", "gpu-box"), allow_secret_env=("TEAM_LLM_KEY",))
    _passes(client, _body(SAMPLE, tmp_path, _rephrase("http://llm.internal:8000/v1", api_key_env="TEAM_LLM_KEY")))
    _passes(client, _body(SAMPLE, tmp_path, _rephrase("https://GPU-BOX:9443/v1", api_key_env=None), run_id="r2"))
    _passes(client, _body(SAMPLE, tmp_path, _rephrase("http://gpu-box/v1", api_key_env="TEAM_LLM_KEY"), run_id="r3"))
    # The local Ray head passes the allowed variable on to jobs (job_env's secret_env), nothing else of that kind.
    from curation.service.jobs import JobManager
    from curation.service.settings import ServiceSettings

    jobs = JobManager(ServiceSettings(runs_root=str(tmp_path / "runs"), state_dir=tmp_path / "st2",
                                      allow_secret_env=("TEAM_LLM_KEY",)))
    assert jobs.local is not None and jobs.local.secret_env == ("TEAM_LLM_KEY",)


def test_curate_serve_flags_reach_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import curation.service.app as app_module
    from curation.cli import app as cli

    seen: list[Any] = []
    monkeypatch.setattr(app_module, "serve", seen.append)
    (tmp_path / "in").mkdir()
    base = ["serve", "--runs-root", str(tmp_path / "runs"), "--state-dir", str(tmp_path / "st")]
    res = CliRunner().invoke(cli, [*base, "--input-root", str(tmp_path / "in"), "--input-root", "s3://b/p",
                                   "--no-sample-inputs", "--allow-secret-env", "TEAM_LLM_KEY",
                                   "--allow-backend-host", "llm.internal:8000", "--cache-root", str(tmp_path / "in")])
    assert res.exit_code == 0, res.output
    s = seen[0]
    assert s.input_roots == (str((tmp_path / "in").resolve()), "s3://b/p/") and not s.sample_inputs
    assert s.allow_secret_env == ("TEAM_LLM_KEY",) and s.allow_backend_hosts == ("llm.internal:8000",)
    assert s.cache_roots == (str((tmp_path / "in").resolve()),)
    res = CliRunner().invoke(cli, [*base, "--allow-secret-env", "CURATE_SERVE_SUBMIT_TOKENS"])
    assert res.exit_code == 2 and "CURATE_SERVE" in res.output
    res = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "300", "TERM": "dumb"})
    for flag in ("--input-root", "--allow-secret-env", "--allow-backend-host", "--allowed-host", "--cache-root"):
        assert flag in res.output


# -- item 11: writes outside the runs root ------------------------------------------------------------------------


def test_a_submitted_cache_dir_outside_the_run_and_the_cache_roots_is_refused(make_client: ClientFactory,
                                                                             tmp_path: Path) -> None:
    """``rephrase_v1.cache_dir`` creates a SQLite cache wherever it points: a submitted one must lie under the run's
    own directory or an operator-declared ``--cache-root``."""
    caches = tmp_path / "caches"
    caches.mkdir()
    (caches / "out").symlink_to(tmp_path)
    client = make_client(allow_backend_hosts=("llm.internal",), cache_roots=(str(caches),))
    runs = tmp_path / "runs"
    for bad in ("/tmp/elsewhere", str(tmp_path / "elsewhere"), f"{runs}/r1/../other-run/cache",
                f"{runs}/r1/../../state", f"{caches}/../state", f"{caches}/out/state", "relative/cache",
                "~/cache", "s3://bucket/cache", str(runs / "other-run" / "cache"), str(tmp_path / "state")):
        _refused(client, _body(SAMPLE, tmp_path, [{**_rephrase("http://llm.internal/v1", api_key_env=None)[0],
                                                   "cache_dir": bad}]),
                 "config_yaml.stages[0] (rephrase_v1).cache_dir", "--cache-root")
    stage = _rephrase("http://llm.internal/v1", api_key_env=None)[0]
    _passes(client, _body(SAMPLE, tmp_path, [{**stage, "cache_dir": str(runs / "r1" / "cache")}]))
    _passes(client, _body(SAMPLE, tmp_path, [{**stage, "cache_dir": str(caches / "team")}], run_id="r2"))
    _refused(make_client(allow_backend_hosts=("llm.internal",)),
             _body(SAMPLE, tmp_path, [{**stage, "cache_dir": str(caches / "team")}], run_id="r3"), "cache_dir")
    with pytest.raises(ConfigError, match="state dir"):
        make_client(cache_roots=(str(tmp_path),))


def _file_stages(path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every stage field that names a file the stage reads (``Stage.artifact_keys``), pointing at ``path``."""
    return [
        ("stages[0] (language_id_v1).model_path", {"stage": "language_id_v1", "model_path": path}),
        ("stages[0] (fasttext_score_v1).models.0.path",
         {"stage": "fasttext_score_v1", "models": [{"name": "q", "path": path}]}),
        ("stages[0] (lm_loss_v1).models.0.path", {"stage": "lm_loss_v1", "models": [{"name": "a", "path": path}]}),
        ("stages[0] (skill_tag_v1).model", {"stage": "skill_tag_v1", "source": "fasttext", "model": path}),
        ("stages[0] (skill_tag_v1).centroids", {"stage": "skill_tag_v1", "source": "embedding", "centroids": path}),
        ("stages[0] (decontaminate_v1).eval_files.0.path",
         {"stage": "decontaminate_v1", "eval_files": [{"path": path}]}),
        ("stages[0] (rephrase_v1).templates_file",
         {**_rephrase("http://llm.internal/v1", api_key_env=None)[0], "templates_file": path}),
        ("stages[0] (rephrase_v1).tokenizer",
         {**_rephrase("http://llm.internal/v1", api_key_env=None)[0], "tokenizer": path}),
    ]


def test_files_a_submitted_stage_config_names_must_lie_under_the_input_roots(make_client: ClientFactory, root: Path,
                                                                             tmp_path: Path) -> None:
    """Models, eval sets, centroids, templates and tokenizers are read like inputs: a submitted config naming
    ``/etc/passwd`` as an eval set, or the job table as templates, would quote their lines into the job's log
    (which read tokens see). Each such field is checked against the input roots before any stage is built."""
    (root / "up").symlink_to(tmp_path)
    (tmp_path / "secret.txt").write_text("the service's secret\n")
    client = make_client(input_roots=(str(root), "s3://team-bucket/models/"), allow_backend_hosts=("llm.internal",))
    attacks = ["/etc/passwd", str(tmp_path / "state" / "jobs.sqlite"), f"{root}/../secret.txt",
               f"{root}/up/secret.txt", "~/.netrc", "./curation/cli.py", "curation/cli.py",
               "http://127.0.0.1:9/model.bin", "file:///etc/passwd", "s3://other-bucket/m.bin",
               f"zip://m.bin::file://{root}/a.jsonl"]
    for attack in attacks:
        for where, stage in _file_stages(attack):
            msg = _refused(client, _body([f"{root}/*.jsonl"], tmp_path, [stage]), "config_yaml.stages[0] (")
            # (the stage's own config refuses some first: eval files are local files only)
            assert (msg.startswith(f"config_yaml.{where}: ") and "input roots" in msg) or "only local files" in msg, msg
    assert client.get("/api/jobs", headers=READ).json() == {"jobs": []}
    # Files under a root, bucket prefixes under a bucket root, and names that are not local paths (a hub id, an
    # API backend's model) pass.
    (root / "m.bin").write_text("model")
    for i, ok in enumerate([str(root / "m.bin"), "s3://team-bucket/models/m.bin", "org/hub-model"]):
        for j, (where, stage) in enumerate(_file_stages(ok)):
            if "eval_files" in where and i > 0:
                continue  # eval files are local files only (the stage's own rule)
            _passes(client, _body([f"{root}/*.jsonl"], tmp_path, [stage], run_id=f"ok{i}-{j}"))


def test_the_job_refuses_a_stage_file_outside_its_roots_before_building_the_stage(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver confines stage building as it confines inputs: a symlink planted in a root after the submission
    check, naming a file outside, is refused before the stage reads it. ``curate run`` is not confined."""
    from curation.pipeline import StageSpec
    from curation.job_driver import job_main
    from curation.service.jobs import INPUT_ROOTS_ENV, PIPELINE_ENV, RUN_ID_ENV
    from curation.stages.decontam.stage import DecontaminateConfig
    from curation.stages.decontam.evalsets import EvalFileSpec

    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"text": "the service secret value one two three four five six seven eight"}\n')
    monkeypatch.setenv(PIPELINE_ENV, "name: x\n")
    monkeypatch.setenv(RUN_ID_ENV, "r1")
    monkeypatch.setenv(INPUT_ROOTS_ENV, json.dumps([str(root)]))
    planted = root / "evals.jsonl"

    def spec() -> StageSpec:
        return StageSpec(stage="decontaminate_v1", config=DecontaminateConfig(eval_files=[EvalFileSpec(path=str(planted))]))

    def run(_args: list[str]) -> None:
        planted.symlink_to(secret)
        with pytest.raises(ConfigError, match=r"stage decontaminate_v1\.eval_files\.0\.path: .*outside the input roots"):
            spec().build()

    job_main([], run=run)
    assert spec().build() is not None  # outside a job: curate run reads what it is given


# -- items 14, 15: the service's state dir and its local Ray head ---------------------------------------------------


@pytest.mark.parametrize("name", [".curate-serve", "serve-state", "state [x]*#"])
def test_the_state_dir_is_never_part_of_a_job_upload(tmp_path: Path, name: str) -> None:
    """Issue 27 item 14: the state dir (Ray token, job table) inside the code folder that every job uploads as its
    working_dir. Ray's own packer, with the excludes the service passes, on a code folder holding one."""
    from types import SimpleNamespace
    import zipfile

    from ray._private.runtime_env.packaging import _zip_files

    from curation.service.jobs import JobManager
    from curation.service.settings import ServiceSettings

    code = tmp_path / "code"
    for rel in ("curation/cli.py", f"{name}/ray/token", f"{name}/jobs.sqlite", f"{name}/logs/j1.log"):
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_text("x")
    from curation.service.jobs import state_excludes
    from curation.submit import DEFAULT_EXCLUDES

    _zip_files(str(code), DEFAULT_EXCLUDES + state_excludes(code, code / name), str(tmp_path / "pkg.zip"),
               include_gitignore=True)
    assert {n for n in zipfile.ZipFile(tmp_path / "pkg.zip").namelist() if not n.endswith("/")} == {"curation/cli.py"}
    # The service's own runtime_env, for a state dir inside the code folder it uploads (this checkout) and outside.
    settings = ServiceSettings(runs_root=str(tmp_path / "runs"), state_dir=REPO / name, ray_address="http://x:1")
    env = JobManager._runtime_env(SimpleNamespace(settings=settings), {"pipeline_yaml": "", "run_id": "r"})
    assert Path(env["working_dir"]) == REPO and set(state_excludes(REPO, REPO / name)) <= set(env["excludes"])
    settings.state_dir = tmp_path / "elsewhere"
    assert state_excludes(REPO, settings.state_dir) == []


def test_a_submitted_config_may_not_pass_engine_arguments_or_trust_remote_code(make_client: ClientFactory,
                                                                             tmp_path: Path) -> None:
    # vLLM's `extra` goes into LLM(**kwargs): trust_remote_code would run a hub repository's code on the cluster,
    # download_dir would write outside the run and the cache roots.
    client = make_client()
    vllm = [{"stage": "rephrase_v1", "templates": ["wrap_medium"],
             "backend": {"kind": "vllm", "model": "attacker/evil",
                         "extra": {"trust_remote_code": True, "download_dir": "/tmp/anywhere"}}}]
    _refused(client, _body(SAMPLE, tmp_path, vllm), "stages[0] (rephrase_v1).backend.extra")
    vllm[0]["backend"]["extra"] = {}
    _passes(client, _body(SAMPLE, tmp_path, vllm))
