"""Executors: where the shard tasks of a pipeline run (in process, or on Ray)."""

from curation.executors.base import Executor, RunResult
from curation.executors.ray import make_executor

__all__ = ["Executor", "RunResult", "make_executor"]
