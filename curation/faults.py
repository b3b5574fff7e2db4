"""Fault injection for the crash tests: every fault point of the project and what Ray forwards of it.

Shard tasks (``curation/executors/shard.py``) call ``shard_point`` at their steps; the service's job
manager calls ``service_point`` around its submissions. Both are inert unless ``FAULT_ENABLE_ENV``
is "1", so a stray variable in a production environment never kills or stalls anything. This module
imports nothing of the project: the core and the service both use it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

#: Fault-injection hook for the crash tests: "kill:SEG:TASK" SIGKILLs the worker after the task's
#: first batch is written, "hang:SEG:TASK" sleeps there, "sleep:SEG:TASK" (TASK may be *) waits 1 s
#: there, "raise:SEG:TASK" raises ValueError at the start, "raise_before_marker:SEG:TASK" after the
#: outputs are published but before the marker. With CURATION_FAULT_ONCE=PATH it fires once.
FAULT_ENV = "CURATION_FAULT"
FAULT_ONCE_ENV = "CURATION_FAULT_ONCE"
#: The hook is inert unless this is also "1". A stray CURATION_FAULT in a production environment
#: (a copied shell profile, a leaked CI variable) must never kill or stall a real run, so only the
#: tests that exercise crashes set both. A second variable rather than "are we under pytest?",
#: because the hook must also fire in Ray workers and in `curate run` subprocesses started by tests.
FAULT_ENABLE_ENV = "CURATION_ENABLE_FAULT_INJECTION"
#: What is forwarded to other processes, only when injection is enabled: to the Ray executor's shard
#: tasks (``RayExecutor.run_tasks``, the one place Ray gets them) and to the service's job drivers.
FAULT_VARS = (FAULT_ENV, FAULT_ONCE_ENV, FAULT_ENABLE_ENV)
#: "POINT:SECONDS" stalls the service's submission at POINT ("before_ray", "after_ray") so that a
#: test can SIGKILL the service there. Inert unless CURATION_ENABLE_FAULT_INJECTION=1 too.
SERVICE_FAULT_ENV = "CURATION_SERVICE_FAULT"

#: The step of a shard task at which each kind of fault fires.
_SHARD_POINTS = {"kill": "after_first_batch", "hang": "after_first_batch", "raise": "start",
                 "raise_before_marker": "before_marker", "sleep": "after_first_batch"}


def enabled() -> bool:
    """Whether fault injection is on in this process (exactly "1", never any other value)."""
    return os.environ.get(FAULT_ENABLE_ENV) == "1"


def fault_injection_env() -> dict[str, str]:
    """The fault-injection variables of this process when injection is enabled; else nothing."""
    if not enabled():
        return {}
    return {k: os.environ[k] for k in FAULT_VARS if k in os.environ}


def shard_point(seg: int, task: int, point: str) -> None:
    """Fire the ``CURATION_FAULT`` fault of pass ``seg``, task ``task`` if it fires at ``point``."""
    if not enabled():
        return
    spec = os.environ.get(FAULT_ENV, "")
    parts = spec.split(":")
    if not spec or len(parts) != 3 or parts[1] != str(seg) or parts[2] not in (str(task), "*"):
        return
    kind = parts[0]
    fires = _SHARD_POINTS.get(kind) == point
    if fires and kind == "sleep":  # a slow task (concurrency tests): every matching task, every time
        time.sleep(1.0)
        return
    once = os.environ.get(FAULT_ONCE_ENV)
    if not fires or (once and os.path.exists(once)):
        return
    if once:
        Path(once).touch()
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":  # lets a test SIGKILL the driver while this task's temp file is open
        time.sleep(3600)
    raise ValueError(f"injected failure in seg {seg} task {task} at {point}")


def service_point(point: str) -> None:
    """Stall the service at ``point`` for the seconds ``CURATION_SERVICE_FAULT`` names there."""
    spec = os.environ.get(SERVICE_FAULT_ENV, "")
    if enabled() and spec.startswith(point + ":"):
        time.sleep(float(spec.split(":", 1)[1]))
