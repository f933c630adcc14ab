"""Figures are written, grids tile exactly, and bad shapes are refused."""

import numpy as np
import pytest
from PIL import Image

from jaxdiff import make_schedule, plotting


def test_image_grid_tiles_row_major():
    imgs = np.stack([np.full((2, 3, 1), v) for v in (0.0, 0.25, 0.5, 1.0, 0.75)])
    grid = plotting.image_grid(imgs, ncols=3, pad=1)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1, 1)
    assert grid[0, 0, 0] == 0.0 and grid[0, 4, 0] == 0.25 and grid[3, 0, 0] == 1.0
    assert grid[3, 4, 0] == 0.75 and grid[3, 8, 0] == 1.0  # empty cell keeps pad_value


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(size=(16, 8, 8, 1))
    traj = rng.uniform(size=(5, 4, 8, 8, 1))
    ts = [99, 75, 50, 25, -1]
    paths = [
        plotting.save_image_grid(tmp_path / "grid.png", imgs, title="samples"),
        plotting.plot_samples_vs_real(tmp_path / "cmp.png", imgs, imgs[::-1]),
        plotting.plot_reverse_process(tmp_path / "rev.png", traj, ts),
        plotting.plot_forward_process(tmp_path / "fwd.png", traj * 2 - 1, ts),
        plotting.plot_histogram_evolution(tmp_path / "hist.png", traj, ts),
        plotting.plot_loss_curves(
            tmp_path / "loss.png", np.arange(200), rng.uniform(size=200), epoch_size=20
        ),
        plotting.plot_schedules(
            tmp_path / "sched.png",
            {"linear": make_schedule("linear"), "cosine": make_schedule("cosine")},
        ),
        plotting.plot_point_process(tmp_path / "pts.png", rng.normal(size=(3, 100, 2)), [0, 1, 2]),
    ]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100


def test_gif(tmp_path):
    frames = np.linspace(0, 1, 6)[:, None, None, None, None] * np.ones((6, 4, 8, 8, 1))
    path = plotting.save_gif(tmp_path / "a.gif", frames, scale=2)
    with Image.open(path) as im:
        assert im.n_frames == 6
        assert im.size == (2 * (2 * 9 - 1), 2 * (2 * 9 - 1))


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\) with C in \(1, 3\)"):
        plotting.image_grid(np.zeros((2, 8, 8, 2)))
    with pytest.raises(ValueError, match="NaN"):
        plotting.image_grid(np.full((1, 2, 2, 1), np.nan))
    with pytest.raises(ValueError, match="S = len"):
        plotting.plot_reverse_process("x.png", np.zeros((3, 2, 4, 4, 1)), [1, 2])


@pytest.fixture
def captured_figures(monkeypatch):
    """The figures the plotting functions would save (nothing is written)."""
    figures = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def test_forward_process_value_range(captured_figures, tmp_path):
    """Images are drawn black to white over ``value_range``; outside it they clip."""
    x = np.zeros((2, 3, 4, 4, 1), np.float32)
    x[:, :, 0, 0] = 0.5  # mid-grey in [0, 1] data, 3/4 grey in [-1, 1] data
    x[1] += 3.0  # "noise" beyond the range: clipped to white
    for value_range, grey in (((0.0, 1.0), 0.5), ((-1.0, 1.0), 0.75)):
        plotting.plot_forward_process(tmp_path / "f.png", x, [0, 500], value_range=value_range)
        fig = captured_figures.pop()
        shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
        assert len(shown) == 6  # 3 images x 2 timesteps, column by column
        assert shown[0][0, 0] == pytest.approx(grey) and shown[0][1, 1] == pytest.approx(
            -value_range[0] / (value_range[1] - value_range[0])
        )
        assert np.all(np.asarray(shown[3]) == 1.0)  # t=500 column: all clipped to white
    with pytest.raises(ValueError, match=r"value_range must be \(low, high\) with high > low"):
        plotting.plot_forward_process(tmp_path / "f.png", x, [0, 500], value_range=(1.0, 0.0))


def test_point_process_titles_the_clean_output_x0(captured_figures, tmp_path):
    frames = np.random.default_rng(0).normal(size=(3, 50, 2))
    plotting.plot_point_process(tmp_path / "p.png", frames, [99, 50, -1])
    titles = [ax.get_title() for ax in captured_figures.pop().axes]
    assert titles == ["t=99", "t=50", "x0"]


def test_points_3d(captured_figures, tmp_path):
    """One 3-D axis per named set, the data drawn as (x, z, y) with y (the roll's height) up."""
    rng = np.random.default_rng(0)
    data, samples = rng.normal(size=(300, 3)), rng.normal(size=(200, 3))
    plotting.plot_points_3d(tmp_path / "p.png", {"data": data, "samples": samples}, max_points=100)
    axes = captured_figures.pop().axes
    assert [ax.name for ax in axes] == ["3d", "3d"]
    assert [ax.get_title() for ax in axes] == ["data", "samples"]
    xs, zs, ys = axes[0].collections[0]._offsets3d
    assert len(xs) == 100  # the first max_points points
    np.testing.assert_allclose(np.asarray(xs), data[:100, 0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ys), data[:100, 1], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(zs), data[:100, 2], rtol=1e-6)
    with pytest.raises(ValueError, match=r"panel 'flat' must be \(N, 3\) points"):
        plotting.plot_points_3d(tmp_path / "p.png", {"flat": data[:, :2]})
