"""The plots and the explorer of the trace and across-leaves chapters (Figures 2 and 3)."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import leafkit  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = leafkit.build_model(leafkit.MnistCNN(channels=(2, 4), hidden=8).config).eval()
    lo, hi = leafkit.pixel_bounds()
    x = torch.rand(6, 1, 28, 28) * (hi - lo) + lo
    data = SimpleNamespace(test_x=x, test_y=torch.tensor([0, 1, 2, 3, 3, 5]))
    return model, data


def test_path_strip_shows_every_kth_frame_and_the_last(tiny):
    model, data = tiny
    res = leafkit.vertical_path(model, data.test_x[:2], steps=25, record_every=5, progress=False)
    fig = leafkit.path_strip(res.points, res.record_steps, res.probs, every=10,
                             row_labels=["a", "b"])
    axes = fig.get_axes()
    assert len(axes) == 2 * 4  # steps 0, 10, 20 and the last (25)
    assert axes[3].get_title().startswith("t=25") and axes[0].get_ylabel() == "a"
    plt.close(fig)
    with pytest.raises(ValueError, match="record_steps"):
        leafkit.path_strip(res.points, res.record_steps[:-1])


def test_plot_trace_curve_and_walk():
    log = [{"step": s, "trace_mean": 1.0 / (s + 1), "trace_median": 0.5 / (s + 1),
            "rtols": [1e-2, 1e-3], "rank_J_by_rtol": [9.0, 9.0], "rank_G_by_rtol": [4.0, 6.0],
            "test_accuracy": 0.9} for s in (0, 100, 200)]
    fig = leafkit.plot_trace_curve(log, steps_per_epoch=66.7, reference_step=150)
    assert fig.get_axes()[0].get_yscale() == "log"
    plt.close(fig)
    d, p = torch.rand(2, 5), torch.rand(2, 5)
    fig = leafkit.plot_walk(range(5), {"walk": (d, p), "control": (d, p)}, labels=["a", "b"])
    assert len(fig.get_axes()[0].get_lines()) == 4
    plt.close(fig)


def test_cross_leaf_explorer_renders_and_reruns(tiny):
    model, data = tiny
    box = leafkit.cross_leaf_explorer(model, data, index=1, steps=20, record_every=10)
    controls = {getattr(w, "description", ""): w for w in box.children[0].children +
                box.children[1].children + box.children[2].children}
    assert box.result.points.shape[:2] == (1, 3)  # steps 0, 10, 20
    assert box.frame_png[:4] == b"\x89PNG"  # a frame is rendered without a frontend
    frame = box.children[3]
    assert frame.max == 2 and frame.value == 2
    frame.value = 0  # moving the slider redraws the frame
    controls["or first image of digit"].value = 3
    assert controls["test index"].value == 3  # the first test image of digit 3
    controls["steps"].value = 30
    controls["Run"].click()
    assert box.index == 3 and box.result.points.shape[1] == 4
    assert controls["walk"].value == 30
    with pytest.raises(ValueError, match="index"):
        leafkit.cross_leaf_explorer(model, data, index=6)
