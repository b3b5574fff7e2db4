"""The driver of a job that ``curate serve`` submitted, on the cluster: ``python -m curation.job_driver``.

It writes the validated pipeline (passed in ``$CURATE_JOB_PIPELINE_YAML``) to a file, confines the job's inputs to
the service's input roots, and runs ``curate run`` on it in this process. The service's job manager
(``curation/service/jobs.py``) names this module in every job's entrypoint (``DRIVER_MODULE``); nothing imports
it, so the CLI it runs is never an import of the service (which the CLI itself imports for ``curate serve``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curation.service.jobs import DRIVER_ENV, INPUT_ROOTS_ENV, PIPELINE_ENV, RUN_ID_ENV


def job_main(argv: list[str] | None = None, run: Callable[[list[str]], Any] | None = None) -> None:
    """Write ``$CURATE_JOB_PIPELINE_YAML`` to RUN_ID.yaml and run ``curate run`` on it (``run``, for tests, gets
    the arguments instead)."""
    run_id = os.environ.get(RUN_ID_ENV, "job")
    text = os.environ.get(PIPELINE_ENV)
    if text is None:
        sys.exit(f"error: ${PIPELINE_ENV} is not set (this module is the driver of a `curate serve` job)")
    os.environ.update(json.loads(os.environ.pop(DRIVER_ENV, "{}")))
    from curation.io.input_roots import InputRoots, confine

    # The driver runs in the job's working dir (the uploaded code folder): relative roots resolve against it.
    confine(InputRoots(roots=tuple(json.loads(os.environ.get(INPUT_ROOTS_ENV, "[]"))), base=os.getcwd()))
    path = Path(tempfile.mkdtemp(prefix="curate-job-")) / f"{run_id}.yaml"
    path.write_text(text)
    args = ["run", str(path), "--ray-address", "auto", "--executor", "ray", *(argv or [])]
    try:
        if run is None:
            from curation.cli import app

            app(args, prog_name="curate")
        else:
            run(args)
    finally:
        confine(None)


if __name__ == "__main__":
    job_main(sys.argv[1:])
