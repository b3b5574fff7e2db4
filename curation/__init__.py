"""curation: Ray-distributed stages that filter, deduplicate, score and mix LLM pretraining data.

Public surface: load a pipeline config, run it, and the base classes to write a stage.
"""

from curation.errors import ConfigError, CurationError, FatalError, RetryableError, ShardError
from curation.pipeline import PipelineConfig, load_pipeline
from curation.stages.base import Doc, Filter, Stage, StageResult

__all__ = [
    "ConfigError", "CurationError", "Doc", "FatalError", "Filter", "PipelineConfig", "RetryableError",
    "ShardError", "Stage", "StageResult", "load_pipeline",
]
__version__ = "0.1.0"
