"""Interactive explorers (ipywidgets) for the path chapters.

Each function returns a widget that a reader runs in Jupyter, Colab or Binder: it computes paths
with a progress bar and shows a slider over the recorded frames with the class probabilities
beside the image. Every explorer also renders a default output when its cell runs
non-interactively (nbval, the book build), and none of them blocks. The frame is shown as an HTML
``<img>`` whose ``alt`` text describes it (ipywidgets' ``Image`` view has no alt attribute), the
explorer's last child; its PNG is also kept as ``box.frame_png`` for code that reads it.

Paper: Section 4 (Figures 3-6).
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib.pyplot as plt
import torch
from torch import nn

from .data import pixel_bounds
from .examples import mirror
from .paths import PathResult, vertical_path
from .viz import frame_figure

__all__ = ["MAX_PATH_STEPS", "MAX_WALK_STEPS", "STEP_SIZE_RANGE", "cross_leaf_explorer",
           "figure_png", "involutivity_explorer", "path_explorer"]

#: The range of the step-size sliders (``FloatLogSlider`` from ``1e-3`` to ``1``).
STEP_SIZE_RANGE = (1e-3, 1.0)
#: The largest number of steps the step sliders of the two path explorers offer.
MAX_WALK_STEPS, MAX_PATH_STEPS = 5000, 10000


def _check_range(name: str, value, low, high, *, high_open: bool = False) -> None:
    """Raise ``ValueError`` naming ``name``, its value and the valid range unless ``value`` lies
    in ``[low, high]`` (``[low, high)`` with ``high_open``): a slider would clamp it silently."""
    inside = low <= value < high if high_open else low <= value <= high
    if not inside:
        raise ValueError(f"{name} must be in [{low}, {high}{')' if high_open else ']'}, "
                         f"got {value}")


def _check_record_every(record_every: int) -> None:
    if not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every must be a positive integer, got {record_every}")


def figure_png(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (for ``ipywidgets.Image``, whose
    content is kept in the saved notebook, so the frame also shows on a static page)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _frame_html(png: bytes, alt: str) -> str:
    """An ``<img>`` of the PNG (a data URL, kept in the saved notebook) with its alt text."""
    return (f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
            f'alt="{html.escape(alt, quote=True)}" style="max-width: 100%">')


def cross_leaf_explorer(model: nn.Module, data, *, index: int = 0, step_size: float = 0.1,
                        steps: int = 500, seed: int = 0, record_every: int = 10,
                        bounds: tuple[float, float] | None = None):
    """An explorer of paths across leaves (Section 4.2): walk a test image along a fixed random
    direction projected onto ``ker G`` at each step, and scrub through the frames.

    The reader picks the test image (by index, or the first test image of a digit), the step
    size, the number of steps and the seed of the random direction, then presses *Run*; a
    progress bar follows the walk. A slider moves over the recorded frames and shows the image,
    the class probabilities beside it (the starting class highlighted) and the probability of the
    starting class along the whole walk. The walk with the default settings is computed when the
    widget is built, so the cell shows a finished frame (the last one) even when it runs
    non-interactively.

    Args:
        model: the classifier (e.g. :func:`leafkit.reference_model`).
        data: an :class:`~leafkit.data.MNISTData`; its test images are the starting points.
        index: default test index.
        step_size: default step length ``alpha``.
        steps: default number of steps.
        seed: default seed of the random direction.
        record_every: keep a frame every that many steps.
        bounds: pixel box to clamp to after each step; ``None``: the valid pixel box
            (:func:`leafkit.data.pixel_bounds`), as in the authors' code.

    Returns:
        An ``ipywidgets.VBox``; its attribute ``result`` holds the latest
        :class:`~leafkit.paths.PathResult`.

    Raises:
        ValueError: ``index``, ``step_size`` or ``steps`` outside the range its control offers
            (``[0, N)``, ``[1e-3, 1]``, ``[record_every, 5000]``), or ``record_every < 1``.

    Paper: Section 4.2, Figure 3.
    """
    import ipywidgets as w

    _check_range("index", index, 0, len(data.test_x), high_open=True)
    _check_record_every(record_every)
    _check_range("step_size", step_size, *STEP_SIZE_RANGE)
    _check_range("steps", steps, record_every, MAX_WALK_STEPS)
    bounds = pixel_bounds() if bounds is None else bounds
    style = {"description_width": "initial"}
    index_box = w.BoundedIntText(index, min=0, max=len(data.test_x) - 1, description="test index",
                                 style=style, layout=w.Layout(width="170px"))
    digit_box = w.Dropdown(options=[("-", None)] + [(str(d), d) for d in range(10)],
                           description="or first image of digit", style=style,
                           layout=w.Layout(width="210px"))
    alpha_box = w.FloatLogSlider(step_size, base=10, min=-3, max=0, step=0.25,
                                 description="step size", style=style)
    steps_box = w.IntSlider(steps, min=record_every, max=MAX_WALK_STEPS, step=record_every,
                            description="steps", style=style)
    seed_box = w.IntText(seed, description="seed", style=style, layout=w.Layout(width="140px"))
    run_button = w.Button(description="Run", button_style="primary", icon="play")
    bar = w.IntProgress(0, min=0, max=steps, description="walk", style=style)
    frame = w.IntSlider(0, min=0, max=0, description="frame", continuous_update=False,
                        style=style, layout=w.Layout(width="500px"))
    view = w.HTML()
    box = w.VBox([w.HBox([index_box, digit_box, seed_box]), w.HBox([alpha_box, steps_box]),
                  w.HBox([run_button, bar]), frame, view])

    def pick_digit(change) -> None:
        if change["new"] is not None:
            index_box.value = int(torch.nonzero(data.test_y == change["new"])[0])

    def show(_=None) -> None:
        res: PathResult = box.result
        k = frame.value
        start = int(res.predicted[0, 0])
        p_start = res.probs[0, :, start]
        title = (f"test image {box.index}, step {int(res.record_steps[k])}\n"
                 f"||x - x0|| = {float(res.distance[0, res.record_steps[k]]):.2f}")
        box.frame_png = figure_png(frame_figure(
            res.points[0, k], res.probs[0, k], title=title, highlight=start,
            curve=(res.record_steps, p_start), marker=int(res.record_steps[k]),
            curve_label=f"p(class {start})"))
        p, c = res.probs[0, k].max(-1)
        t = int(res.record_steps[k])
        view.value = _frame_html(box.frame_png, (
            f"Frame {k + 1} of {len(res.record_steps)} of a walk across leaves from test image "
            f"{box.index}, at step {t}, distance {float(res.distance[0, t]):.2f} from the start: "
            f"the image, classified {int(c)} with probability {float(p):.2f}; a "
            f"bar chart of the class probabilities, the starting class {start} highlighted; and "
            f"the probability of class {start} along the walk, {float(p_start[k]):.2f} here."))

    def run(_=None) -> None:
        bar.max, bar.value = steps_box.value, 0
        x = data.test_x[index_box.value][None]
        u = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed_box.value))

        def follow(step: int, distance: torch.Tensor) -> bool:
            bar.value = step
            return False

        box.result = vertical_path(model, x, u, step_size=alpha_box.value,
                                   steps=steps_box.value, bounds=bounds,
                                   record_every=record_every, progress=False, stop=follow)
        box.index = index_box.value
        bar.value = bar.max
        frame.unobserve(show, "value")
        frame.max = frame.value = len(box.result.record_steps) - 1
        frame.observe(show, "value")
        show()

    digit_box.observe(pick_digit, "value")
    run_button.on_click(run)
    run()
    return box


def involutivity_explorer(x: torch.Tensor, *, num_classes: int = 10,
                          activations: tuple[str, ...] = ("relu", "tanh", "softplus", "gelu",
                                                          "sigmoid"),
                          depths: tuple[int, ...] = (1, 2, 3, 4),
                          widths: tuple[int, ...] = (8, 32, 128, 512), seed: int = 0):
    """An explorer of the involutivity residual (Theorem 3.1) of randomly initialized MLPs.

    The reader picks the activation, the number of hidden layers, their width and the precision;
    the residual :func:`leafkit.frobenius.involutivity_residual` is recomputed on the inputs
    ``x`` at once. ReLU gives round-off (about ``1e-15`` in float64, ``1e-7`` to ``1e-4`` in
    float32); smooth activations give order one. The default setting is also printed as plain
    text when the widget is built, so a static page shows a result.

    Args:
        x: inputs ``(B, *input_shape)``, e.g. a few test digits.
        num_classes: ``C`` of the MLPs.
        activations, depths, widths: the choices offered (the first activation, the second depth
            and the second width are the defaults).
        seed: the seed of each network's initialization.

    Returns:
        An ``ipywidgets.VBox``.

    Raises:
        ValueError: an empty choice, an unknown activation, a depth or width below 1,
            ``num_classes < 2``, or ``seed`` negative.

    Paper: Theorem 3.1, eq. (3.4); the Remark after it (smooth activations).
    """
    import ipywidgets as w

    from .frobenius import involutivity_residual
    from .models import ACTIVATIONS, MLP

    if not activations or not depths or not widths:
        raise ValueError("activations, depths and widths must each offer at least one choice")
    unknown = [a for a in activations if str(a).lower() not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"activations {unknown} are unknown; choose from {sorted(ACTIVATIONS)}")
    for name, values in (("depths", depths), ("widths", widths)):
        bad = [v for v in values if not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"{name} must be positive integers, got {bad}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    n = x[0].numel()
    act_box = w.Dropdown(options=activations, value=activations[0], description="activation")
    depth_box = w.Dropdown(options=depths, value=depths[min(1, len(depths) - 1)],
                           description="hidden layers")
    width_box = w.Dropdown(options=widths, value=widths[min(1, len(widths) - 1)],
                           description="width")
    dtype_box = w.ToggleButtons(options=["float64", "float32"], value="float64",
                                description="precision")
    out = w.Output()

    def report() -> str:
        with torch.random.fork_rng():  # seeded, without touching the caller's random state
            torch.manual_seed(seed)
            net = MLP(n, [width_box.value] * depth_box.value, num_classes, act_box.value).eval()
        dtype = torch.float64 if dtype_box.value == "float64" else torch.float32
        res = involutivity_residual(net, x, dtype=dtype)
        return (f"{act_box.value} MLP, {depth_box.value} x {width_box.value} hidden, "
                f"{dtype_box.value}: residual median {res.median():.1e}, max {res.max():.1e} "
                f"over {len(x)} inputs")

    def update(_=None) -> None:
        with out:
            out.clear_output(wait=True)
            print(report())

    print("default setting:", report())
    for box in (act_box, depth_box, width_box, dtype_box):
        box.observe(update, "value")
    update()
    return w.VBox([w.HBox([act_box, depth_box]), w.HBox([width_box, dtype_box]), out])


def path_explorer(model: nn.Module, data, *, source: int = 0, target: int | None = None,
                  step_size: float = 0.1, max_steps: int = 300, projection: str = "exact",
                  tol: float = 1.0, record_every: int = 10, mirror_target: bool = False,
                  bounds: tuple[float, float] | None = None):
    """An explorer of horizontal paths (Algorithm 4.1) between two test images.

    The reader picks the source and the target (by test index, or the first test image of a
    digit; the target may be mirrored left to right, as in Figure 5), the projection, the step
    size and the budget of steps, then presses *Run*; a progress bar follows the path. A slider
    moves over the recorded frames and shows the image, the class probabilities beside it (the
    target's class highlighted) and the distance to the target along the whole path. The path
    with the default settings is computed when the widget is built, so the cell shows a finished
    frame (the last one) even when it runs non-interactively.

    Args:
        model: the classifier (e.g. :func:`leafkit.reference_model`).
        data: an :class:`~leafkit.data.MNISTData`; sources and targets are its test images.
        source: default test index of the source.
        target: default test index of the target; ``None``: the first test image of another
            class than the source's.
        step_size: default step length ``alpha``.
        max_steps: default budget of steps.
        projection: default projection (see :func:`leafkit.paths.horizontal_path`).
        tol: arrival radius.
        record_every: keep a frame every that many steps.
        mirror_target: whether the target starts mirrored left to right (Figure 5).
        bounds: pixel box to clamp to after each step; ``None``: the valid pixel box
            (:func:`leafkit.data.pixel_bounds`), as in the authors' code.

    Returns:
        An ``ipywidgets.VBox``; its attribute ``result`` holds the latest
        :class:`~leafkit.paths.PathResult`.

    Raises:
        ValueError: ``source``, ``target``, ``step_size`` or ``max_steps`` outside the range its
            control offers (``[0, N)``, ``[1e-3, 1]``, ``[record_every, 10000]``),
            ``record_every < 1``, or an unknown projection.

    Paper: Algorithm 4.1, Figures 4-6.
    """
    import ipywidgets as w

    from .paths import PROJECTIONS, _check_projection, horizontal_path

    n_test = len(data.test_x)
    _check_range("source", source, 0, n_test, high_open=True)
    if target is None:
        target = int(torch.nonzero(data.test_y != data.test_y[source])[0])
    _check_range("target", target, 0, n_test, high_open=True)
    _check_record_every(record_every)
    _check_range("step_size", step_size, *STEP_SIZE_RANGE)
    _check_range("max_steps", max_steps, record_every, MAX_PATH_STEPS)
    _check_projection(projection)
    bounds = pixel_bounds() if bounds is None else bounds
    style = {"description_width": "initial"}
    small = w.Layout(width="170px")

    def picker(value: int, what: str):
        index = w.BoundedIntText(value, min=0, max=n_test - 1, description=f"{what} index",
                                 style=style, layout=small)
        digit = w.Dropdown(options=[("-", None)] + [(str(d), d) for d in range(10)],
                           description="or first of digit", style=style,
                           layout=w.Layout(width="180px"))

        def pick(change) -> None:
            if change["new"] is not None:
                index.value = int(torch.nonzero(data.test_y == change["new"])[0])

        digit.observe(pick, "value")
        return index, digit

    source_box, source_digit = picker(source, "source")
    target_box, target_digit = picker(target, "target")
    mirror_box = w.Checkbox(mirror_target, description="mirror the target", style=style)
    proj_box = w.Dropdown(options=PROJECTIONS, value=projection, description="projection",
                          style=style, layout=w.Layout(width="200px"))
    alpha_box = w.FloatLogSlider(step_size, base=10, min=-3, max=0, step=0.25,
                                 description="step size", style=style)
    steps_box = w.IntSlider(max_steps, min=record_every, max=MAX_PATH_STEPS, step=record_every,
                            description="budget (steps)", style=style)
    run_button = w.Button(description="Run", button_style="primary", icon="play")
    bar = w.IntProgress(0, min=0, max=max_steps, description="path", style=style)
    frame = w.IntSlider(0, min=0, max=0, description="frame", continuous_update=False,
                        style=style, layout=w.Layout(width="500px"))
    view = w.HTML()
    box = w.VBox([w.HBox([source_box, source_digit]),
                  w.HBox([target_box, target_digit, mirror_box]),
                  w.HBox([proj_box, alpha_box, steps_box]), w.HBox([run_button, bar]),
                  frame, view])

    def show(_=None) -> None:
        res: PathResult = box.result
        k = frame.value
        t = int(res.record_steps[k])
        title = (f"{box.pair}, step {t}\n||target - x|| = {float(res.distance[0, t]):.2f}"
                 + (" (arrived)" if bool(res.arrived[0]) and k == len(res.record_steps) - 1
                    else ""))
        box.frame_png = figure_png(frame_figure(
            res.points[0, k], res.probs[0, k], title=title, highlight=box.target_class,
            curve=(range(res.distance.shape[1]), res.distance[0].numpy()), marker=t,
            curve_label="distance to target"))
        p, c = res.probs[0, k].max(-1)
        view.value = _frame_html(box.frame_png, (
            f"Frame {k + 1} of {len(res.record_steps)} of a horizontal path {box.pair}, at step "
            f"{t}: the image, classified {int(c)} with probability {float(p):.2f}; a bar chart "
            f"of the class probabilities, the target's class {box.target_class} highlighted; "
            f"and the distance to the target along the path, {float(res.distance[0, t]):.2f} "
            f"here{' (arrived)' if title.endswith('(arrived)') else ''}."))

    def run(_=None) -> None:
        bar.max, bar.value = steps_box.value, 0
        x = data.test_x[source_box.value][None]
        y = data.test_x[target_box.value][None]
        y = mirror(y) if mirror_box.value else y

        def follow(step: int, distance: torch.Tensor) -> bool:
            bar.value = step
            return False

        box.result = horizontal_path(model, x, y, step_size=alpha_box.value,
                                     max_steps=steps_box.value, tol=tol, bounds=bounds,
                                     projection=proj_box.value, record_every=record_every,
                                     progress=False, stop=follow)
        box.target_class = int(data.test_y[target_box.value])
        box.pair = (f"#{source_box.value} -> {'mirror of ' if mirror_box.value else ''}"
                    f"#{target_box.value} ({proj_box.value})")
        bar.value = bar.max
        frame.unobserve(show, "value")
        frame.max = frame.value = len(box.result.record_steps) - 1
        frame.observe(show, "value")
        show()

    run_button.on_click(run)
    run()
    return box
