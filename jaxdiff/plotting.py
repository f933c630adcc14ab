"""Pictures of diffusion: sample grids, forward and reverse processes, schedules, losses, GIFs.

Every function takes NumPy-convertible arrays and a path, writes one file and returns the path.
Images are ``(N, H, W, C)`` floats in [0, 1] (C = 1 or 3); points are ``(N, D)``. Figures are
built with matplotlib's object-oriented ``Figure`` (no pyplot, no global backend state), GIFs
with Pillow (a matplotlib dependency).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

__all__ = [
    "image_grid",
    "plot_forward_process",
    "plot_histogram_evolution",
    "plot_inpainting",
    "plot_loss_curves",
    "plot_point_process",
    "plot_points_3d",
    "plot_reverse_process",
    "plot_samples_vs_real",
    "plot_schedules",
    "save_gif",
    "save_image_grid",
]


def _as_images(images, name: str = "images") -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must have shape (N, H, W, C) with C in (1, 3), got shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or inf values")
    return np.clip(x, 0.0, 1.0)


def image_grid(images, ncols: int | None = None, *, pad: int = 1, pad_value: float = 1.0):
    """Tile ``(N, H, W, C)`` images row-major into one ``(rows*(H+pad)-pad, ..., C)`` array."""
    x = _as_images(images)
    n, h, w, c = x.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), pad_value, np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = x[i]
    return grid


def _imshow(ax, img: np.ndarray) -> None:
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
    return path


def save_image_grid(path, images, ncols: int | None = None, *, title: str | None = None) -> Path:
    """Save a grid of ``(N, H, W, C)`` images in [0, 1] as a PNG figure."""
    grid = image_grid(images, ncols)
    scale = 6.0 / max(grid.shape[:2])
    fig = Figure(figsize=(grid.shape[1] * scale + 0.2, grid.shape[0] * scale + 0.5), dpi=150)
    ax = fig.add_subplot()
    _imshow(ax, grid)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_samples_vs_real(path, samples, real, *, n: int = 64, title: str = "") -> Path:
    """Generated samples beside real data, two grids of up to ``n`` images each."""
    samples, real = _as_images(samples, "samples")[:n], _as_images(real, "real")[:n]
    fig = Figure(figsize=(10, 5.4), dpi=150)
    for i, (imgs, name) in enumerate(((samples, "generated"), (real, "real data"))):
        ax = fig.add_subplot(1, 2, i + 1)
        _imshow(ax, image_grid(imgs))
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


#: RGB colour of the unknown (to be generated) pixels in :func:`plot_inpainting`'s masked inputs.
MASK_COLOR = (0.85, 0.35, 0.1)


def plot_inpainting(
    path, originals, masks, results, *, names: Sequence[str] | None = None, title: str = ""
) -> Path:
    """Inpainting grid: per mask, three rows (masked input, inpainted result, original).

    Args:
      originals, results: ``(G, N, H, W, C)`` images in [0, 1]: G masks of N images each.
      masks: ``(G, N, H, W, C)`` (or ``C = 1``) booleans, True = known pixel. The masked-input
        row draws the unknown pixels in :data:`MASK_COLOR`.
      names: G labels of the masks (row titles).
    """
    orig, res = np.asarray(originals, np.float32), np.asarray(results, np.float32)
    known = np.asarray(masks).astype(bool)
    if orig.ndim != 5 or res.shape != orig.shape or known.shape[:-1] != orig.shape[:-1]:
        raise ValueError(
            "originals, results and masks must be (G, N, H, W, C) arrays of one shape, got "
            f"{orig.shape}, {res.shape} and {known.shape}"
        )
    g, n = orig.shape[:2]
    names = [f"mask {i}" for i in range(g)] if names is None else list(names)
    if len(names) != g:
        raise ValueError(f"names must give one label per mask ({g}), got {len(names)}")

    def rgb(x):
        x = _as_images(x)
        return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x

    fig = Figure(figsize=(0.6 * n + 0.8, 1.9 * g + 0.3), dpi=120, layout="constrained")
    for i, sub in enumerate(fig.subfigures(g, 1, squeeze=False)[:, 0]):
        masked = np.where(known[i].any(-1, keepdims=True), rgb(orig[i]), np.float32(MASK_COLOR))
        rows = ((masked, "masked"), (rgb(res[i]), "inpainted"), (rgb(orig[i]), "original"))
        for r, (imgs, label) in enumerate(rows):
            ax = sub.add_subplot(3, 1, r + 1)
            _imshow(ax, image_grid(imgs, n))
            ax.set_ylabel(label, fontsize=7)
        sub.suptitle(names[i], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_reverse_process(path, trajectory, timesteps: Sequence[int], *, n: int = 8) -> Path:
    """Reverse-process grid: rows are samples, columns are the recorded timesteps.

    Args:
      trajectory: ``(S, N, H, W, C)`` images in [0, 1], one slice per recorded step.
      timesteps: ``S`` labels for the columns (the diffusion step of each slice, -1 = final).
    """
    traj = np.asarray(trajectory, np.float32)
    if traj.ndim != 5 or len(timesteps) != traj.shape[0]:
        raise ValueError(
            f"trajectory must be (S, N, H, W, C) with S = len(timesteps) = {len(timesteps)}, "
            f"got shape {traj.shape}"
        )
    s, n = traj.shape[0], min(n, traj.shape[1])
    fig = Figure(figsize=(1.1 * s, 1.1 * n + 0.4), dpi=120)
    for j in range(s):
        for i in range(n):
            ax = fig.add_subplot(n, s, i * s + j + 1)
            _imshow(ax, _as_images(traj[j, i : i + 1])[0])
            if i == 0:
                t = int(timesteps[j])
                ax.set_title("x0" if t < 0 else f"t={t}", fontsize=8)
    fig.suptitle("reverse process (rows: samples, columns: steps)", fontsize=10)
    return _save(fig, path)


def plot_forward_process(
    path,
    noisy,
    timesteps: Sequence[int],
    *,
    n: int = 6,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> Path:
    """Forward-noising grid with a pixel histogram under each column.

    Args:
      noisy: ``(S, N, H, W, C)`` noisy images x_t, in data units (not clipped), one slice per
        timestep in ``timesteps``.
      n: images (rows) to show.
      value_range: the data's ``(black, white)`` values: ``(-1, 1)`` for images scaled to
        [-1, 1] (MNIST here), ``(0, 1)`` for [0, 1] data (the 8x8 digits). Pixels outside it
        (the noise) are clipped for display only; the histograms show the raw values.
    """
    x = np.asarray(noisy, np.float32)
    if x.ndim != 5 or len(timesteps) != x.shape[0]:
        raise ValueError(
            f"noisy must be (S, N, H, W, C) with S = len(timesteps) = {len(timesteps)}, "
            f"got shape {x.shape}"
        )
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    s, n = x.shape[0], min(n, x.shape[1])
    fig = Figure(figsize=(1.5 * s, 1.4 * (n + 1.5)), dpi=120)
    gs = fig.add_gridspec(n + 2, s)
    for j in range(s):
        for i in range(n):
            ax = fig.add_subplot(gs[i, j])
            _imshow(ax, _as_images((x[j, i : i + 1] - lo) / (hi - lo))[0])
            if i == 0:
                ax.set_title(f"t={int(timesteps[j])}", fontsize=8)
        ax = fig.add_subplot(gs[n:, j])
        ax.hist(x[j].ravel(), bins=50, range=(-3.5, 3.5), density=True, color="tab:blue")
        grid = np.linspace(-3.5, 3.5, 200)
        ax.plot(grid, np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi), "k--", lw=0.8)
        ax.set_yticks([])
        ax.tick_params(labelsize=6)
    fig.suptitle("forward process q(x_t | x_0): images and pixel histograms (dashed: N(0,1))")
    return _save(fig, path)


def plot_histogram_evolution(path, trajectory, timesteps: Sequence[int]) -> Path:
    """Pixel-intensity histograms and mean/std of the reverse process at each recorded step."""
    traj = np.asarray(trajectory, np.float32)
    s = traj.shape[0]
    fig = Figure(figsize=(12, 4), dpi=120)
    ax = fig.add_subplot(1, 2, 1)
    for j in range(s):
        ax.hist(
            traj[j].ravel(), bins=60, histtype="step", density=True, label=f"t={int(timesteps[j])}"
        )
    ax.set_xlabel("pixel value")
    ax.set_title("pixel histograms over the reverse process")
    ax.legend(fontsize=6)
    ax = fig.add_subplot(1, 2, 2)
    flat = traj.reshape(s, -1)
    ax.plot(range(s), flat.mean(1), "o-", label="mean")
    ax.plot(range(s), flat.std(1), "s-", label="std")
    ax.set_xticks(range(s), [str(int(t)) for t in timesteps], rotation=45, fontsize=7)
    ax.set_xlabel("timestep")
    ax.legend()
    ax.set_title("pixel intensity statistics")
    return _save(fig, path)


def plot_loss_curves(path, steps, losses, *, window: int = 50, epoch_size: int | None = None):
    """Loss per step with a moving average, per epoch (if ``epoch_size``), and a histogram."""
    steps = np.asarray(steps)
    losses = np.asarray(losses, np.float64)
    if steps.shape != losses.shape or losses.ndim != 1 or losses.size == 0:
        raise ValueError(
            f"steps and losses must be equal-length 1-D arrays, got {steps.shape}, {losses.shape}"
        )
    panels = 3 if epoch_size else 2
    fig = Figure(figsize=(5 * panels, 3.8), dpi=120)
    ax = fig.add_subplot(1, panels, 1)
    ax.plot(steps, losses, lw=0.5, alpha=0.4, label="per step")
    w = max(1, min(window, losses.size))
    smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
    ax.plot(steps[w - 1 :], smooth, lw=1.5, label=f"moving mean ({w})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("training loss")
    ax.legend()
    if epoch_size:
        ax = fig.add_subplot(1, panels, 2)
        n_epochs = losses.size // epoch_size
        if n_epochs:
            per_epoch = losses[: n_epochs * epoch_size].reshape(n_epochs, epoch_size).mean(1)
            ax.plot(np.arange(1, n_epochs + 1), per_epoch, "o-", ms=2)
        ax.set_xlabel("epoch")
        ax.set_title("mean loss per epoch")
    ax = fig.add_subplot(1, panels, panels)
    ax.hist(losses, bins=50)
    ax.set_xlabel("loss")
    ax.set_title("loss histogram")
    return _save(fig, path)


def plot_schedules(path, schedules: Mapping[str, object]) -> Path:
    """betas, alphas and alphas_cumprod (alpha-bar) of several schedules against t/T."""
    fig = Figure(figsize=(14, 3.8), dpi=120)
    names = ("betas", "alphas", "alphas_cumprod")
    for k, field in enumerate(names):
        ax = fig.add_subplot(1, 3, k + 1)
        for label, sch in schedules.items():
            values = np.asarray(getattr(sch, field))
            ax.plot(np.arange(values.size) / values.size, values, label=label)
        ax.set_xlabel("t / T")
        ax.set_title("alpha-bar" if field == "alphas_cumprod" else field)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_point_process(path, frames, timesteps: Sequence[int], *, title: str = "") -> Path:
    """Scatter plots of a 2-D point cloud at several steps (``frames``: ``(S, N, 2)``).

    Panels are titled ``t=<step>``; a negative step (a sampler's ``t_prev = -1`` after its last
    step) is the clean output and is titled ``x0``.
    """
    pts = np.asarray(frames, np.float32)
    if pts.ndim != 3 or pts.shape[-1] < 2 or pts.shape[0] != len(timesteps):
        raise ValueError(
            f"frames must be (S, N, D>=2) with S = len(timesteps), got shape {pts.shape}"
        )
    s = pts.shape[0]
    fig = Figure(figsize=(2.2 * s, 2.5), dpi=120)
    lim = float(np.percentile(np.abs(pts[..., :2]), 99.5)) * 1.1 or 1.0
    for j in range(s):
        ax = fig.add_subplot(1, s, j + 1)
        ax.scatter(pts[j, :, 0], pts[j, :, 1], s=1, alpha=0.4, edgecolors="none")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        t = int(timesteps[j])
        ax.set_title(f"t={t}" if t >= 0 else "x0", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_points_3d(
    path, panels: Mapping[str, np.ndarray], *, title: str = "", elev: float = 35.0,
    azim: float = -60.0, max_points: int = 5000,
) -> Path:  # fmt: skip
    """3-D scatter plots side by side, one per named ``(N, 3)`` point set, shared limits.

    For 3-D point clouds (the 3-D swiss roll), where a 2-D projection hides the roll. The second
    coordinate y points up; points are coloured by their distance from the y axis,
    ``sqrt(x^2 + z^2)``, which tells the arms of a roll around that axis apart. At most
    ``max_points`` of each set (the first ones) are drawn.
    """
    sets = {name: np.asarray(p, np.float32)[:max_points] for name, p in panels.items()}
    for name, p in sets.items():
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"panel {name!r} must be (N, 3) points, got shape {p.shape}")
    if not sets:
        raise ValueError("panels is empty: pass at least one named (N, 3) point set")
    finite = np.concatenate([p[np.isfinite(p).all(1)] for p in sets.values()])
    if len(finite):
        lo, hi = np.percentile(finite, 0.5, axis=0), np.percentile(finite, 99.5, axis=0)
    else:
        lo, hi = -np.ones(3), np.ones(3)
    pad = 0.05 * np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad, hi + pad
    r_max = float(np.hypot(np.abs(lo[[0, 2]]).max(), np.abs(hi[[0, 2]]).max())) or 1.0
    fig = Figure(figsize=(4.2 * len(sets), 4.0), dpi=120)
    for k, (name, p) in enumerate(sets.items()):
        ax = fig.add_subplot(1, len(sets), k + 1, projection="3d")
        ax.scatter(p[:, 0], p[:, 2], p[:, 1], c=np.hypot(p[:, 0], p[:, 2]), cmap="viridis",
                   vmin=0.0, vmax=r_max, s=1, alpha=0.6, depthshade=False)  # fmt: skip
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[2], hi[2])
        ax.set_zlim(lo[1], hi[1])
        ax.set_xlabel("x", fontsize=7)
        ax.set_ylabel("z", fontsize=7)
        ax.set_zlabel("y", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def save_gif(path, frames, *, duration_ms: int = 80, scale: int = 4, ncols: int | None = None):
    """Save an animation of image batches.

    Args:
      frames: ``(F, N, H, W, C)`` (each frame a grid of N images) or ``(F, H, W, C)``, in [0, 1].
      scale: integer upscaling of each frame (nearest neighbour) so small images are visible.
    """
    f = np.asarray(frames, np.float32)
    if f.ndim == 4:
        f = f[:, None]
    if f.ndim != 5:
        raise ValueError(f"frames must be (F, N, H, W, C) or (F, H, W, C), got shape {f.shape}")
    images = []
    for frame in f:
        grid = image_grid(frame, ncols)
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
        arr = (grid * 255.0 + 0.5).astype(np.uint8)
        images.append(Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hold the last frame longer so the result can be seen.
    durations = [duration_ms] * (len(images) - 1) + [duration_ms * 15]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path
