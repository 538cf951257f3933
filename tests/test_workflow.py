"""The publishing workflow (.github/workflows/book.yml) is valid and does what the README says.

Three levels, all offline: the YAML loads and holds the required jobs, steps and permissions; it
validates against GitHub's workflow schema (the copy vendored in ``check-jsonschema``); and, when
``actionlint`` is on the PATH, actionlint passes too (its PyPI wrapper downloads the binary at
install time, which an offline machine cannot do, so it is optional). Each ``run:`` script is also
checked by ``bash -n``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def uses(workflow: dict, job: str, action: str) -> dict:
    found = [s for s in steps(workflow, job) if s.get("uses", "").split("@")[0] == action]
    assert found, f"job {job} does not use {action}"
    assert re.fullmatch(r"v\d+", found[0]["uses"].split("@")[1]), "pin actions to a major version"
    return found[0]


def runs(workflow: dict, job: str) -> str:
    return "\n".join(s.get("run", "") for s in steps(workflow, job))


def test_triggers_and_jobs(workflow):
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in workflow["on"]
    assert set(workflow["jobs"]) == {"build", "deploy"}
    assert workflow["jobs"]["deploy"]["needs"] == "build"
    assert workflow["concurrency"]["group"] == "pages"


def test_build_installs_and_builds_with_full_mnist(workflow):
    assert uses(workflow, "build", "actions/checkout")
    assert str(uses(workflow, "build", "actions/setup-python")["with"]["python-version"]) == "3.11"
    script = runs(workflow, "build")
    assert "pip install -r requirements.txt" in script
    assert "jupyter-book build ." in script
    assert workflow["jobs"]["build"]["env"]["LEAFKIT_DATA"] == "full"
    assert "load_mnist('full')" in script
    caches = [s["with"]["path"] for s in steps(workflow, "build")
              if s.get("uses", "").startswith("actions/cache@")]
    assert "~/.cache/leafkit" in caches and any(p.startswith("_build") for p in caches)


def test_chapters_data_is_downloaded(workflow):
    """Every data set a chapter loads is fetched by the workflow (CIFAR-10 once one uses it)."""
    script = runs(workflow, "build")
    for loader in sorted({m for f in (ROOT / "book").glob("*.md")
                          for m in re.findall(r"\bload_(?:cifar\w*|mnist)\b", f.read_text())}):
        assert loader in script, f"a chapter calls {loader} but the workflow does not download it"


def test_pages_deployment(workflow):
    assert uses(workflow, "build", "actions/upload-pages-artifact")["with"]["path"] == "_build/html"
    assert uses(workflow, "build", "actions/configure-pages")
    deploy = workflow["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert uses(workflow, "deploy", "actions/deploy-pages")["id"] == "deployment"


def test_notebooks_for_colab_and_binder(workflow):
    script = runs(workflow, "build")
    assert "python tools/make_notebooks.py --site _build/html" in script
    assert "HEAD:refs/heads/notebooks" in script
    assert workflow["jobs"]["build"]["permissions"]["contents"] == "write"
    order = [s.get("name", s.get("uses", "")) for s in steps(workflow, "build")]
    assert order.index("Build the book") < order.index("Notebooks for Colab and Binder"), \
        "generate the notebooks after the build: book/*.ipynb next to book/*.md would be pages too"


def test_scripts_are_valid_bash(workflow):
    for job in workflow["jobs"]:
        for step in steps(workflow, job):
            if "run" in step:
                proc = subprocess.run(["bash", "-n"], input=step["run"], text=True,
                                      capture_output=True)
                assert proc.returncode == 0, f"{job}/{step.get('name')}: {proc.stderr}"
    for path in re.findall(r"python (\S+\.py)", runs(workflow, "build")):
        assert (ROOT / path).is_file(), f"the workflow runs {path}, which does not exist"


def test_matches_github_workflow_schema():
    pytest.importorskip("check_jsonschema")
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint():
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (optional; the schema test above still runs)")
    proc = subprocess.run([actionlint, str(WORKFLOW)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
