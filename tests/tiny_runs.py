"""A tiny real training run for the checkpoint tests (importable by spawned processes too)."""

from __future__ import annotations

import torch

TINY_MLP = {"arch": "mlp", "in_features": 8, "hidden": [5], "num_classes": 3,
            "activation": "relu"}


def tiny_data(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs and labels for :data:`TINY_MLP`, the same in every process."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def train_tiny(**kwargs):
    """A tiny MLP trained a few SGD steps on :func:`tiny_data`, cached in ``$LEAFKIT_CACHE``."""
    import leafkit

    options = {"steps": 4, "batch_size": 6, "checkpoint_steps": (0,), "progress": False,
               "device": "cpu"}
    options.update(kwargs)
    return leafkit.train(TINY_MLP, *tiny_data(), **options)


def save_at_the_same_time(cache: str, barrier, results) -> None:
    """Train :func:`train_tiny` in ``cache``; after writing its temporary file, wait for the other
    process to have written its own, so that both then rename at the same moment. Puts
    ``"trained"`` (or the error) into the queue ``results``."""
    import os

    os.environ["LEAFKIT_CACHE"] = cache
    real_save = torch.save

    def save_then_wait(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        barrier.wait(timeout=120)

    torch.save = save_then_wait
    try:
        result = train_tiny()
        results.put("cached" if result.from_cache else "trained")
    except Exception as err:  # noqa: BLE001 - reported to the parent, which asserts on it
        results.put(f"{type(err).__name__}: {err}")
    finally:
        torch.save = real_save
