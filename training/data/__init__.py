"""Loading curation shards for training: per-domain document index, tokenizers, the mixture loader."""

from training.data.dataset import MixtureDataset
from training.data.loader import LoaderConfig, MixtureLoader

__all__ = ["LoaderConfig", "MixtureDataset", "MixtureLoader"]
