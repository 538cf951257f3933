"""Seeds and a record of the software a run used."""

from __future__ import annotations

import platform
import random
import re
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import torch

from .cache import default_device

__all__ = ["VERDICTS", "ClaimVerdict", "environment_summary", "report_claim", "seed_everything"]

#: How a claim of the paper fared in a run: the words every page and the introduction's table use.
VERDICTS = ("held", "partly held", "not held")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); every chapter calls this first."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment_summary() -> dict[str, str]:
    """Versions and device of this run, for the pages that report what they ran on
    (``leafkit device``: where :func:`leafkit.default_device` puts training and data)."""
    try:
        version = metadata.version("leafkit")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "CPU"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "leafkit": version, "device": device,
            "leafkit device": str(default_device()), "threads": str(torch.get_num_threads())}


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim of the paper and how it fared in this run (see :func:`report_claim`)."""

    key: str
    claim: str
    verdict: str
    evidence: str

    def _repr_markdown_(self) -> str:
        return f"**{self.claim}: {self.verdict}.** {self.evidence}"

    def __str__(self) -> str:
        return f"{self.claim}: {self.verdict}. {self.evidence}"


def report_claim(key: str, claim: str, verdict: str, evidence: str) -> ClaimVerdict:
    """State how one claim of the paper fared in this run, for the reader and for the book's table.

    The page that tests a claim computes ``verdict`` (one of :data:`VERDICTS`) and a plain-text
    ``evidence`` sentence with the run's numbers, and ends with this call: the returned object
    shows as one bold line under the cell. When the page is built by Jupyter Book, the verdict and
    the evidence are also glued (``myst_nb.glue``, not displayed) as ``claim-<key>-verdict`` and
    ``claim-<key>-evidence``, which the introduction's table of claims pastes; elsewhere (Colab,
    a plain Jupyter) nothing else happens.

    Raises:
        ValueError: a verdict not in :data:`VERDICTS`, a key that is not lowercase words joined by
            hyphens, or an empty claim or evidence.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", key):
        raise ValueError(f"claim key must be lowercase words joined by hyphens, got {key!r}")
    if not claim.strip() or not evidence.strip():
        raise ValueError("a claim needs its statement and the evidence of this run")
    result = ClaimVerdict(key, claim, verdict, evidence)
    try:
        from myst_nb import glue
    except ImportError:  # not a Jupyter Book environment: the visible line is all
        return result
    glue(f"claim-{key}-verdict", verdict, display=False)
    glue(f"claim-{key}-evidence", evidence, display=False)
    return result
