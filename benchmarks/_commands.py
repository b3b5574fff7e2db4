"""Run the project's commands (``curate``, ``train``) for an experiment script, logged and timed.

Two ways, same command-line arguments, same CLI code path:

* ``in_process=False``: each command is ``python -m MODULE ARGS...`` in a fresh interpreter (the
  worktree's code via ``PYTHONPATH``), as a user would type it.
* ``in_process=True``: the command's typer app is invoked in this interpreter. A fresh interpreter
  spends seconds importing torch/transformers/pyarrow before doing anything (10-20 s each on a loaded
  2-core machine), which is most of a smoke run's ~50 commands; in-process they are imported once.

Either way a failing command (non-zero exit, or an exception in-process) raises ``RuntimeError`` with
the command line and the end of what it printed on stdout and stderr (the CLIs print user errors on
either).
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path


class CommandError(RuntimeError):
    """A project command exited non-zero (or raised, in-process)."""


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """``env`` in ``os.environ`` for the block (subprocesses the command starts inherit it), then restored."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Commands:
    """``cmds("training.cli", "eval", ...)`` -> (stdout, seconds); every call is appended to ``log``."""

    def __init__(self, repo: Path, log: Path, threads: int, in_process: bool) -> None:
        self.repo, self.in_process, self.threads = repo, in_process, threads
        self.env = {"PYTHONPATH": str(repo), "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log

    def __call__(self, module: str, *args: str) -> tuple[str, float]:
        t0 = time.time()
        rc, stdout, stderr = (self._in_process if self.in_process else self._subprocess)(module, list(args))
        dt = time.time() - t0
        with open(self.log, "a", encoding="utf-8") as fh:  # opened per line: nothing left open, nothing lost
            fh.write(f"{dt:8.1f}s  {module} {' '.join(args)}\n")
        if rc != 0:
            raise CommandError(f"command failed ({rc}): python -m {module} {' '.join(args)}\n"
                               f"--- stdout ---\n{stdout[-2000:]}\n--- stderr ---\n{stderr[-3000:]}")
        return stdout, dt

    def _subprocess(self, module: str, args: list[str]) -> tuple[int, str, str]:
        r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=self.repo,
                           env={**os.environ, **self.env})
        return r.returncode, r.stdout, r.stderr

    def _in_process(self, module: str, args: list[str]) -> tuple[int, str, str]:
        import torch
        import typer

        torch.set_num_threads(self.threads)
        command = typer.main.get_command(importlib.import_module(module).app)
        out, err = io.StringIO(), io.StringIO()
        with _environ(self.env), redirect_stdout(out), redirect_stderr(err):
            try:
                # standalone_mode=False: returns the command's value, or the exit code of typer.Exit
                rv = command.main(args, prog_name=module, standalone_mode=False)
                rc = rv if isinstance(rv, int) else 0
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # noqa: BLE001 - reported with the command line, as a subprocess's traceback would be
                traceback.print_exc()
                rc = 1
        return rc, out.getvalue(), err.getvalue()
