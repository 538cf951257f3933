"""SGD training as in the paper (Section 4): lr 0.01, batch 60, no momentum, seeded, with
checkpoints at chosen steps, a logging hook, and an on-disk cache keyed by the full configuration.

The cache lives under ``cache_dir("checkpoints")`` (``~/.cache/leafkit`` or ``$LEAFKIT_CACHE``).
A file is reused only if it was written for exactly the same configuration (model, optimizer,
steps, seed, data fingerprint, hook); a corrupt or mismatched file raises :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .cache import cache_dir
from .models import MnistCNN, build_model

FORMAT_VERSION = 1
REFERENCE_EPOCHS = 10  # the paper's checkpoint: step 10000 of batch 60 on 60000 images = epoch 10

Hook = Callable[[int, nn.Module], "dict | None"]


class CheckpointError(RuntimeError):
    """A cached checkpoint is unreadable or was written for another configuration."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; its hash is the cache key."""

    model: dict
    steps: int
    checkpoint_steps: tuple[int, ...] = ()
    lr: float = 0.01
    batch_size: int = 60
    momentum: float = 0.0
    seed: int = 0
    data: str = ""  # fingerprint of the training images and labels
    hook: str | None = None  # identity of the logging hook, if any
    hook_every: int = 0

    def key(self) -> str:
        blob = json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class TrainResult:
    """Checkpoints (``{step: state_dict}``, CPU tensors) and the hook's log of one training run."""

    config: TrainConfig
    checkpoints: dict[int, dict[str, torch.Tensor]]
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the training itself (0 for nothing if loaded)
    from_cache: bool = False

    def model(self, step: int | None = None, device: torch.device | str | None = None) -> nn.Module:
        """The network at checkpoint ``step`` (default: the last step), in eval mode."""
        step = self.config.steps if step is None else step
        if step not in self.checkpoints:
            raise KeyError(f"no checkpoint at step {step}; available: {sorted(self.checkpoints)}")
        net = build_model(self.config.model)
        net.load_state_dict(self.checkpoints[step])
        return net.to(device or "cpu").eval()


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in (x, y):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def steps_for_epochs(epochs: float, n_train: int, batch_size: int = 60) -> int:
    """SGD steps in ``epochs`` passes over ``n_train`` images: 10 epochs = 10000 steps on full
    MNIST, 667 steps on the 4000-image offline subset."""
    return round(epochs * n_train / batch_size)


def checkpoint_path(config: TrainConfig) -> Path:
    return cache_dir("checkpoints") / f"{config.model.get('arch', 'model')}-{config.key()[:20]}.pt"


def train(model_config: dict, train_x: torch.Tensor, train_y: torch.Tensor, *, steps: int,
          checkpoint_steps: Sequence[int] = (), lr: float = 0.01, batch_size: int = 60,
          momentum: float = 0.0, seed: int = 0, hook: Hook | None = None, hook_every: int = 100,
          hook_key: str | None = None, device: torch.device | str | None = None,
          cache: bool = True, progress: bool = True) -> TrainResult:
    """Train a fresh ``build_model(model_config)`` with plain SGD and cross-entropy (eq. 2.3).

    Batches are drawn from a stream of seeded permutations of the training set (epochs run into
    one another, so ``steps`` need not be a multiple of an epoch). The final step is always
    checkpointed.

    Args:
        model_config: a model's ``.config`` dictionary, e.g. ``MnistCNN().config``.
        train_x, train_y: ``(N, ...)`` images and ``(N,)`` labels.
        steps: number of SGD steps.
        checkpoint_steps: further steps at which to keep the weights (step 0 = initialization).
        hook: ``hook(step, model) -> dict | None`` called at step 0, every ``hook_every`` steps and
            at the end, with the model in eval mode; returned dicts (with ``"step"`` added) form
            ``TrainResult.log``, cached with the checkpoints.
        hook_key: the hook's identity in the cache key (default: its qualified name). Change it
            when the hook's meaning changes.
        cache: reuse / write the on-disk cache.
    Returns:
        TrainResult holding the checkpoints and the log.
    Paper: Section 4 (SGD, batch 60, learning rate 0.01; checkpoint at step 10000 = epoch 10).
    """
    if train_x.shape[0] != train_y.shape[0] or train_x.shape[0] == 0:
        raise ValueError(f"train_x and train_y must hold the same non-zero number of samples, got "
                         f"{tuple(train_x.shape)} and {tuple(train_y.shape)}")
    if steps <= 0 or any(not 0 <= s <= steps for s in checkpoint_steps):
        raise ValueError(f"need steps > 0 and checkpoint steps within [0, {steps}], got "
                         f"steps={steps}, checkpoint_steps={list(checkpoint_steps)}")
    config = TrainConfig(
        model=dict(model_config), steps=int(steps),
        checkpoint_steps=tuple(sorted(set(int(s) for s in (*checkpoint_steps, steps)))),
        lr=float(lr), batch_size=int(batch_size), momentum=float(momentum), seed=int(seed),
        data=data_fingerprint(train_x, train_y),
        hook=(hook_key or getattr(hook, "__qualname__", repr(hook))) if hook else None,
        hook_every=int(hook_every) if hook else 0)
    path = checkpoint_path(config)
    if cache and path.exists():
        return load_checkpoint(path, config)
    result = _run_sgd(config, train_x, train_y, hook, device, progress)
    if cache:
        tmp = path.with_suffix(".tmp")
        torch.save({"format": FORMAT_VERSION, "key": config.key(), "config": asdict(config),
                    "checkpoints": result.checkpoints, "log": result.log,
                    "seconds": result.seconds}, tmp)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written checkpoint
    return result


def load_checkpoint(path: Path, config: TrainConfig) -> TrainResult:
    """Load a cached run, checking that it was written for ``config``."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({err}); "
                              "delete it to retrain") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has an unknown format; delete it to retrain")
    if payload.get("key") != config.key() or payload.get("config") != asdict(config):
        raise CheckpointError(f"checkpoint {path} was written for another configuration "
                              f"(stored {payload.get('config')}); delete it to retrain")
    return TrainResult(config=config, checkpoints=payload["checkpoints"], log=payload["log"],
                       seconds=payload.get("seconds", 0.0), from_cache=True)


def _run_sgd(config: TrainConfig, train_x, train_y, hook, device, progress) -> TrainResult:
    device = torch.device(device) if device is not None else train_x.device
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    x, y = train_x.to(device), train_y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(config.seed)
    n, bs = len(x), config.batch_size
    order = torch.empty(0, dtype=torch.long)
    checkpoints: dict[int, dict[str, torch.Tensor]] = {}
    log: list[dict] = []
    hook_steps = set(range(0, config.steps + 1, config.hook_every)) | {config.steps} if hook else set()

    def visit(step: int) -> None:
        if step in config.checkpoint_steps:
            checkpoints[step] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if step in hook_steps:
            model.eval()
            record = hook(step, model) or {}
            log.append({"step": step, **{k: _plain(v) for k, v in record.items()}})
            model.train()

    start = time.perf_counter()
    model.train()
    visit(0)
    for step in tqdm(range(1, config.steps + 1), desc="training", disable=not progress,
                     mininterval=1.0):
        while len(order) < bs:  # epochs run into one another: a stream of permutations
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:bs].to(device), order[bs:]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
        visit(step)
    return TrainResult(config=config, checkpoints=checkpoints, log=log,
                       seconds=time.perf_counter() - start)


def _plain(value):
    """Log values as plain Python numbers/lists so the cache loads with ``weights_only=True``."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.detach().cpu().tolist()
    return value


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``."""
    model.eval()
    dev = next(model.parameters()).device
    hits = sum((model(x[i:i + batch_size].to(dev)).argmax(1).cpu() == y[i:i + batch_size]).sum().item()
               for i in range(0, len(x), batch_size))
    return hits / len(x)


def reference_run(data, *, epochs: float = REFERENCE_EPOCHS, device=None,
                  progress: bool = True) -> TrainResult:
    """The paper's reference checkpoint: its CNN after ``epochs`` epochs of SGD (step 10000 on full
    MNIST; 667 steps on the 4000-image offline subset), trained once and then loaded from cache.

    Args:
        data: an :class:`~leafkit.data.MNISTData`.
    Paper: Section 4 ("every experiment uses the checkpoint at step 10000").
    """
    steps = steps_for_epochs(epochs, len(data.train_x))
    return train(MnistCNN().config, data.train_x, data.train_y, steps=steps, device=device,
                 progress=progress)


def reference_model(data, *, device=None, progress: bool = True) -> nn.Module:
    """The network at the reference checkpoint (see :func:`reference_run`), in eval mode."""
    return reference_run(data, device=device, progress=progress).model(device=device)
