"""The hidden claim checks of a chapter fail the test command when the claim fails.

A chapter's asserts live in cells tagged ``remove-cell``: the reader never sees them, nbval still
runs them. This test runs a one-claim chapter, written in the book's own format, through the
repository's conftest.py and nbval in a separate pytest process: once as the claim is stated
(Proposition 2.1, rank G <= C - 1), and once broken on purpose (rank G <= C - 2). The first run
must pass and the second must fail on the hidden cell.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cases import MYST_FRONT_MATTER

ROOT = Path(__file__).resolve().parent.parent

CHAPTER = MYST_FRONT_MATTER + '''
# One claim

```{code-cell} ipython3
import torch
import leafkit

leafkit.seed_everything(0)
model = leafkit.MLP(12, (8,), num_classes=4).double().eval()
x = torch.randn(3, 12, dtype=torch.float64)
J, log_p = leafkit.log_prob_jacobian(model, x)
lam = leafkit.local_data_spectrum(J, log_p)
rank = leafkit.numerical_rank(lam, [1e-10]).squeeze(1)
print("rank of G:", rank.tolist())
```

```{code-cell} ipython3
:tags: [remove-cell]
assert (rank <= BOUND).all()  # Proposition 2.1
```
'''


def run_chapter(tmp_path: Path, bound: str) -> subprocess.CompletedProcess:
    tree = tmp_path / bound.replace(" ", "")
    (tree / "book").mkdir(parents=True)
    shutil.copy(ROOT / "conftest.py", tree / "conftest.py")
    shutil.copytree(ROOT / "tools", tree / "tools")  # conftest.py imports two of them
    (tree / "book" / "claim.md").write_text(CHAPTER.replace("BOUND", bound), encoding="utf-8")
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "book/claim.md", "--nbval-lax", "--nbval-current-env",
         "-p", "no:cacheprovider", "-q", "-o", "addopts=", "--rootdir", str(tree)],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("bound, passes", [("4 - 1", True), ("4 - 2", False)],
                         ids=["as-stated", "broken-on-purpose"])
def test_hidden_claim_check_decides_the_outcome(tmp_path, bound, passes):
    run = run_chapter(tmp_path, bound)
    out = run.stdout + run.stderr
    if passes:
        assert run.returncode == 0, out
        assert "2 passed" in out, out
    else:
        assert run.returncode == 1, out
        assert "1 failed" in out and "AssertionError" in out and "Proposition 2.1" in out, out
