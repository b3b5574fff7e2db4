"""The mixture loader as a ``torch.utils.data.IterableDataset`` for trainers other than ours.

    from training.data import LoaderConfig, MixtureDataset
    ds = MixtureDataset(LoaderConfig(runs=["runs/quickstart"], ratios={"web": 0.7, "code": 0.3}, seq_len=512,
                                     tokenizer="hf:/models/my-tokenizer"))
    # Hugging Face Trainer: Trainer(model, args, train_dataset=ds); a plain loop: DataLoader(ds, batch_size=8)

Each item is one packed sequence, as Hugging Face causal LMs take it: ``input_ids`` (``seq_len`` token ids) and
``labels`` (the same ids; the model shifts them by one itself; metadata-prefix tokens are -100 there, so they are
not trained on). ``domain`` names the domain the sequence was drawn from unless ``with_domain=False``.

Ranks: ``rank`` and ``world_size`` default to ``torch.distributed`` when it is initialised, else to the ``RANK``
and ``WORLD_SIZE`` environment variables torchrun sets, else one process. Every rank reads its own disjoint
documents (see ``training.data.loader``). With the Hugging Face Trainer on several processes, let every rank read
its own stream: ``TrainingArguments(accelerator_config={"dispatch_batches": False})`` (by default Accelerate reads
an ``IterableDataset`` on rank 0 only and sends slices to the others).

Order and resume: the sequence stream is a pure function of the config and the rank, so a new dataset gives the
same sequences; this is how the Hugging Face Trainer resumes (in a new process it iterates a new dataset and skips
the batches already trained). Iterating the same dataset again continues where it stopped (``restart()`` goes back
to the first sequence). ``state_dict`` / ``load_state_dict`` resume without re-reading: they hold the position
after the last item handed out. ``DataLoader(num_workers=0)`` (the Trainer's default) keeps that exact; DataLoader workers would
each iterate a copy of the dataset, so the dataset refuses to run inside one (give ``LoaderConfig`` more
``batch_size`` or use ranks instead).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from training.data.loader import LoaderConfig, MixtureLoader
from training.data.meco import IGNORE_INDEX
from training.data.tokenizer import Tokenizer


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class MixtureDataset(IterableDataset):
    """Packed sequences of the mixture, one per item: ``{"input_ids", "labels"[, "domain"]}`` (see the module doc)."""

    def __init__(self, cfg: LoaderConfig, rank: int | None = None, world_size: int | None = None,
                 tokenizer: Tokenizer | None = None, with_domain: bool = True) -> None:
        env_rank, env_world = _rank_world()
        self.rank = env_rank if rank is None else rank
        self.world_size = env_world if world_size is None else world_size
        # One sequence per step of the inner loader: the outer DataLoader does the batching.
        self.loader = MixtureLoader(LoaderConfig(**{**cfg.resolved().__dict__, "batch_size": 1}), rank=self.rank,
                                    world_size=self.world_size, tokenizer=tokenizer)
        self.with_domain = with_domain
        self._start = self.loader.state_dict()  # where every fresh iteration begins

    @property
    def vocab_size(self) -> int:
        return self.loader.tokenizer.vocab_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if get_worker_info() is not None:
            raise RuntimeError("MixtureDataset runs in the main process (DataLoader(num_workers=0)): each DataLoader "
                               "worker would iterate its own copy and repeat the same sequences")
        return self._items()

    def _items(self) -> Iterator[dict[str, Any]]:
        loader = self.loader
        while True:
            inputs, targets, domains = loader.next_batch()
            ids = torch.from_numpy(np.ascontiguousarray(inputs[0]))
            # HF models shift labels themselves: labels are the inputs, with the masked prefix positions ignored.
            # targets[i] is the token after inputs[i], so a masked target i means input i + 1 is a prefix token.
            labels = ids.clone()
            masked = np.flatnonzero(targets[0] == IGNORE_INDEX) + 1
            labels[torch.from_numpy(masked[masked < len(labels)])] = IGNORE_INDEX
            item: dict[str, Any] = {"input_ids": ids, "labels": labels}
            if self.with_domain:
                item["domain"] = domains[0]
            yield item

    def restart(self) -> None:
        """Back to the first sequence (what a fresh iteration of a new dataset would give)."""
        self.loader.load_state_dict(self._start)

    def state_dict(self) -> dict[str, Any]:
        """The position after the last item handed out."""
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
