"""Executors: where the shard tasks of a pipeline run (in process, or on Ray)."""

from __future__ import annotations

from typing import Any

from curation.executors.base import Executor, RunResult
from curation.pipeline import PipelineConfig

__all__ = ["Executor", "RunResult", "make_executor"]


def make_executor(config: PipelineConfig, **kwargs: Any) -> Executor:
    """The executor named by ``config.executor.kind``; ``kwargs`` go to its constructor (``overwrite``,
    ``progress``). Imported on demand, so a local run loads nothing of the Ray executor's."""
    if config.executor.kind == "local":
        from curation.executors.local import LocalExecutor

        return LocalExecutor(config, **kwargs)
    from curation.executors.ray import RayExecutor

    return RayExecutor(config, **kwargs)
