"""SGD training as in the paper (Section 4): lr 0.01, batch 60, no momentum, seeded, with
checkpoints at chosen steps, a logging hook, and an on-disk cache keyed by the full configuration.

The cache lives under ``cache_dir("checkpoints")`` (``~/.cache/leafkit`` or ``$LEAFKIT_CACHE``).
A file is reused only if it was written for exactly the same configuration (model, optimizer,
steps, seed, data fingerprint, hook). Every load checks the file in full and raises
:class:`CheckpointError`, naming the file, when it is unreadable, of another format or
configuration, fails its sha256 checksum (flipped bytes), does not fit ``build_model(config.model)``
exactly (missing, unexpected or reshaped entries) or holds non-finite weights.

The cache key holds what determines the run, not where it ran: the exact bits of trained weights
also depend on the device and the number of CPU threads, which are recorded in the checkpoint
(:attr:`TrainResult.environment`) but are not part of the key, so a checkpoint trained on one
machine is reused on another.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .cache import cache_dir, default_device, training_environment
from .models import MnistCNN, build_model
from .published import fetch_checkpoint

__all__ = ["FORMAT_VERSION", "REFERENCE_EPOCHS", "CheckpointError", "TrainConfig", "TrainResult",
           "accuracy", "checkpoint_path", "data_fingerprint", "hook_identity", "load_checkpoint",
           "reference_model", "reference_run", "save_checkpoint", "steps_for_epochs",
           "tensor_checksum", "train"]

FORMAT_VERSION = 2  # 2: sha256 checksum of the tensors, training environment
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
    seconds: float = 0.0  # wall time of the training itself (as recorded, if loaded)
    from_cache: bool = False
    # what trained it: torch version, device, CPU threads (they change the bits, not the key)
    environment: dict = field(default_factory=dict)

    def model(self, step: int | None = None, device: torch.device | str | None = None) -> nn.Module:
        """The network at checkpoint ``step`` (default: the last step), in eval mode, on
        ``device`` (default: :func:`leafkit.default_device`)."""
        step = self.config.steps if step is None else step
        if step not in self.checkpoints:
            raise KeyError(f"no checkpoint at step {step}; available: {sorted(self.checkpoints)}")
        net = build_model(self.config.model)
        net.load_state_dict(self.checkpoints[step])
        return net.to(device if device is not None else default_device()).eval()


def tensor_checksum(checkpoints: dict[int, dict[str, torch.Tensor]]) -> str:
    """sha256 over every checkpoint's tensors: step, name, shape, dtype and bytes, in sorted
    order, so any flipped byte, renamed entry or changed shape changes it."""
    h = hashlib.sha256()
    for step in sorted(checkpoints):
        for name in sorted(checkpoints[step]):
            t = checkpoints[step][name].detach().cpu().contiguous()
            h.update(f"{step}\0{name}\0{tuple(t.shape)}\0{t.dtype}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def hook_identity(hook: Callable, hook_key: str | None = None) -> str:
    """The identity of ``hook`` in the cache key: ``hook_key`` when given, else, for a function
    defined at module level, its module, qualified name and a hash of its code (bytecode,
    constants and names used, nested code included), so that editing the hook retrains.

    Raises:
        ValueError: for a lambda, a closure, a function defined inside a function, a bound method
            or any other callable without ``hook_key``: such hooks differ by what they capture,
            which their name and code do not show, so two of them would share one cache entry.
    """
    if hook_key is not None:
        if not isinstance(hook_key, str) or not hook_key:
            raise ValueError(f"hook_key must be a non-empty string, got {hook_key!r}")
        return hook_key
    qualname = getattr(hook, "__qualname__", type(hook).__qualname__)
    if (not inspect.isfunction(hook) or "<lambda>" in qualname or "<locals>" in qualname
            or hook.__closure__):
        kind = ("a lambda" if "<lambda>" in qualname
                else "a function defined inside a function or a closure" if inspect.isfunction(hook)
                else f"a {type(hook).__name__}, not a module-level function")
        raise ValueError(f"the hook {qualname!r} is {kind}: leafkit cannot tell two such hooks "
                         f"apart, so they would share one cached run. Pass hook_key='...', a "
                         f"string naming what the hook computes (and its parameters), or "
                         f"cache=False")
    return f"{hook.__module__}.{qualname}#{_code_hash(hook.__code__)[:16]}"


def _code_hash(code: types.CodeType) -> str:
    h = hashlib.sha256(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        h.update(_code_hash(const).encode() if isinstance(const, types.CodeType)
                 else repr(sorted(map(repr, const)) if isinstance(const, frozenset)
                           else const).encode())
    return h.hexdigest()


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
        hook_key: the hook's identity in the cache key. Needed, when caching, for a lambda, a
            closure or a function defined inside a function; a module-level function defaults
            to its name and a hash of its code (see :func:`hook_identity`). Change it when the
            hook's meaning changes.
        device: where to train; ``None``: :func:`leafkit.default_device`. The data are moved
            there once; checkpoints are kept on the CPU.
        cache: reuse / write the on-disk cache. A run not in the cache is first looked for
            among the published checkpoints (:mod:`leafkit.published`; ``LEAFKIT_CHECKPOINTS=off``
            never looks), which must match its configuration key and sha256.
    Returns:
        TrainResult holding the checkpoints, the log and the training environment.
    Raises:
        CheckpointError: a cached file for this configuration is corrupt or does not fit.
        ValueError: bad arguments, a hook that cannot be keyed, or a run whose weights became
            NaN or infinite (nothing is cached then).
    Paper: Section 4 (SGD, batch 60, learning rate 0.01; checkpoint at step 10000 = epoch 10).
    """
    if train_x.shape[0] != train_y.shape[0] or train_x.shape[0] == 0:
        raise ValueError(f"train_x and train_y must hold the same non-zero number of samples, got "
                         f"{tuple(train_x.shape)} and {tuple(train_y.shape)}")
    if steps <= 0 or any(not 0 <= s <= steps for s in checkpoint_steps):
        raise ValueError(f"need steps > 0 and checkpoint steps within [0, {steps}], got "
                         f"steps={steps}, checkpoint_steps={list(checkpoint_steps)}")
    if batch_size < 1 or (hook is not None and hook_every < 1):
        raise ValueError(f"batch_size must be at least 1 (got {batch_size}) and, with a hook, "
                         f"hook_every at least 1 (got {hook_every})")
    config = TrainConfig(
        model=dict(model_config), steps=int(steps),
        checkpoint_steps=tuple(sorted({int(s) for s in (*checkpoint_steps, steps)})),
        lr=float(lr), batch_size=int(batch_size), momentum=float(momentum), seed=int(seed),
        data=data_fingerprint(train_x, train_y),
        hook=(hook_identity(hook, hook_key) if cache
              else hook_key or f"{getattr(hook, '__qualname__', repr(hook))} (not cached)")
        if hook else None,
        hook_every=int(hook_every) if hook else 0)
    path = checkpoint_path(config) if cache else None
    if path is not None and not path.exists() and fetch_checkpoint(config.key(), path):
        try:
            return load_checkpoint(path, config)
        except CheckpointError as err:  # a published file that passed its sha256 but not this
            path.unlink(missing_ok=True)
            print(f"leafkit: refused the published checkpoint ({err}); training here", flush=True)
    if path is not None and path.exists():
        return load_checkpoint(path, config)
    result = _run_sgd(config, train_x, train_y, hook, device, progress)
    _check_finite(result.checkpoints, "training produced", "the run diverged: lower lr "
                  f"(lr={config.lr}) or check the data; nothing was cached")
    if path is not None:
        save_checkpoint(path, result)
    return result


def save_checkpoint(path: Path, result: TrainResult) -> None:
    """Write ``result`` to ``path`` atomically: into a temporary file of its own in the same
    folder, then renamed over ``path``, so a killed run never leaves a half-written checkpoint
    and two processes saving the same run at once both succeed."""
    payload = {"format": FORMAT_VERSION, "key": result.config.key(),
               "config": asdict(result.config), "checkpoints": result.checkpoints,
               "checksum": tensor_checksum(result.checkpoints), "log": result.log,
               "seconds": result.seconds, "environment": result.environment}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from its other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, config: TrainConfig) -> TrainResult:
    """Load a cached run, checking that it was written for ``config``, that its tensors match
    their stored sha256 checksum, that every step loads strictly into
    ``build_model(config.model)`` and that every weight is finite.

    Raises:
        CheckpointError: naming ``path`` and what is wrong with it; deleting it retrains.
    """
    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} {problem}; delete it to retrain")

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise refuse(f"is corrupt or unreadable ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise refuse(f"has format {found!r}, not leafkit's checkpoint format {FORMAT_VERSION} "
                     f"(written by another leafkit version?)")
    if payload.get("key") != config.key() or payload.get("config") != asdict(config):
        raise refuse(f"was written for another configuration (stored {payload.get('config')})")
    checkpoints = payload.get("checkpoints")
    if (not isinstance(checkpoints, dict) or sorted(checkpoints) != list(config.checkpoint_steps)
            or not all(isinstance(sd, dict) for sd in checkpoints.values())):
        raise refuse(f"does not hold the checkpoint steps {list(config.checkpoint_steps)}")
    stored, actual = payload.get("checksum"), tensor_checksum(checkpoints)
    if stored != actual:
        raise refuse(f"fails its sha256 checksum (stored {str(stored)[:16]}..., tensors give "
                     f"{actual[:16]}...): its weights were changed or damaged after it was written")
    for step, state in checkpoints.items():
        try:
            build_model(config.model).load_state_dict(state, strict=True)
        except RuntimeError as err:
            detail = " ".join(str(err).split("\n", 1)[-1].split()).rstrip(".")
            raise refuse(f"does not fit the model {config.model} at step {step}: {detail}") from err
    try:
        _check_finite(checkpoints, "holds", "")
    except ValueError as err:
        raise refuse(str(err)) from None
    return TrainResult(config=config, checkpoints=checkpoints, log=payload.get("log", []),
                       seconds=payload.get("seconds", 0.0), from_cache=True,
                       environment=payload.get("environment", {}))


def _check_finite(checkpoints: dict[int, dict[str, torch.Tensor]], verb: str, advice: str) -> None:
    for step in sorted(checkpoints):
        for name, t in checkpoints[step].items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"{verb} non-finite weights: {bad} NaN/inf values in {name!r} "
                                 f"at step {step}" + (f"; {advice}" if advice else ""))


def _run_sgd(config: TrainConfig, train_x, train_y, hook, device, progress) -> TrainResult:
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    x, y = train_x.to(device), train_y.to(device)  # once; batches are indexed on the device
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(config.seed)  # on the CPU: the same batches everywhere
    n, bs = len(x), config.batch_size
    order = torch.empty(0, dtype=torch.long, device=device)
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
        while len(order) < bs:  # epochs run into one another: a stream of permutations,
            # each drawn on the CPU and moved to the device once per epoch
            order = torch.cat([order, torch.randperm(n, generator=gen).to(device)])
        idx, order = order[:bs], order[bs:]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
        visit(step)
    return TrainResult(config=config, checkpoints=checkpoints, log=log,
                       seconds=time.perf_counter() - start,
                       environment=training_environment(device))


def _plain(value):
    """Log values as plain Python numbers/lists so the cache loads with ``weights_only=True``:
    tensors and NumPy values become numbers or lists, inside lists and dicts too."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.detach().cpu().tolist()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 100) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``, ``batch_size`` images a forward pass
    (more run slower on a CPU: MnistCNN, 1 thread, 0.42 ms an image at 100, 0.85 at 1000)."""
    model.eval()
    dev = next(model.parameters()).device
    hits = sum((model(x[i:i + batch_size].to(dev)).argmax(1) == y[i:i + batch_size].to(dev)).sum()
               for i in range(0, len(x), batch_size))
    return int(hits) / len(x)


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
    """The network at the reference checkpoint (see :func:`reference_run`), in eval mode, on
    ``device`` (default: the device of ``data``'s tensors)."""
    device = data.train_x.device if device is None else device
    return reference_run(data, device=device, progress=progress).model(device=device)
