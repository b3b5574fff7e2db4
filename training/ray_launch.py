"""Launch the training loop with Ray Train's TorchTrainer instead of torchrun.

    train ray training/configs/tiny.yaml --workers 2            # CPU, gloo
    train ray CONFIG --workers 8 --gpu --address auto           # a GPU Ray cluster, NCCL

Ray Train starts one worker per rank and sets up the torch process group; ``training.train.train``
sees it initialised and runs unchanged (the same checkpoints, logs and resume).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from training.train import TrainConfig


def _loop(config: dict[str, Any]) -> None:
    from curation.config import from_dict
    from training.train import train

    train(from_dict(TrainConfig, config, where="ray_launch"))


def launch(cfg: TrainConfig, workers: int, use_gpu: bool = False) -> Any:
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        _loop, train_loop_config=asdict(cfg),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
    )
    return trainer.fit()
