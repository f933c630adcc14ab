"""The inpainting run's numbers (per image and per mask), figure and report.md."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from experiments.inpaint.config import PROG, InpaintConfig
from jaxdiff import plotting
from jaxdiff.outputs import MetricsLog, write_report


def mask_text(kind: str, size: int, fraction: float) -> str:
    """What a mask hides, in words."""
    h = size // 2
    return {
        "center": f"the central {h}x{h} square is unknown",
        "left": f"the left {h} columns are unknown",
        "random": f"a random {fraction:.0%} of the pixels is known",
    }[kind]


def mask_metrics(out: Path, config: InpaintConfig, arrays: dict, labels: np.ndarray) -> dict:
    """Per mask: MSE of the generated region, the black-fill baseline, and the check that the
    known pixels equal the input exactly; one record per image in ``out/metrics.jsonl``.

    ``arrays``: ``raw`` (sampler output in [-1, 1]) and ``known`` (the inputs), ``samples`` and
    ``originals`` (both in [0, 1]) and ``masks`` (True = known), all ``(M * N, H, W, 1)``, mask
    by mask. Errors are in [0, 1] pixel units.
    """
    raw, known, masks = arrays["raw"], arrays["known"], arrays["masks"]
    samples, originals = arrays["samples"], arrays["originals"]
    n = len(labels)
    sq_err = (samples - originals) ** 2
    per_mask: dict[str, dict] = {}
    with MetricsLog(out / "metrics.jsonl") as log:
        for i, kind in enumerate(config.masks):
            sl = slice(i * n, (i + 1) * n)
            unknown = ~masks[sl]
            mse = [float(sq_err[sl][j][unknown[j]].mean()) for j in range(n)]
            exact = [
                float(np.abs(raw[sl][j] - known[sl][j])[masks[sl][j]].max(initial=0.0))
                for j in range(n)
            ]
            for j in range(n):
                log.write(
                    {"mask": kind, "image": j, "label": int(labels[j]), "mse_unknown": mse[j],
                     "known_max_abs_diff": exact[j]}
                )  # fmt: skip
            per_mask[kind] = {
                "known_fraction": float(masks[sl].mean()),
                "mse_unknown": float(sq_err[sl][unknown].mean()),
                "mse_unknown_black_fill": float((originals[sl][unknown] ** 2).mean()),
                "known_max_abs_diff": max(exact),
                "known_max_abs_diff_samples_npy": float(
                    np.abs(samples[sl] - originals[sl])[masks[sl]].max(initial=0.0)
                ),
                "mse_unknown_per_image": mse,
            }
    return per_mask


def inpaint_figure(out: Path, config: InpaintConfig, arrays: dict, title: str) -> None:
    """``out/inpaint_grid.png``: per mask the masked input, the result and the original."""
    m = len(config.masks)
    originals, masks, samples = arrays["originals"], arrays["masks"], arrays["samples"]
    size = originals.shape[1]
    plotting.plot_inpainting(
        out / "inpaint_grid.png",
        originals.reshape(m, -1, *originals.shape[1:]),
        masks.reshape(m, -1, *masks.shape[1:]),
        samples.reshape(m, -1, *samples.shape[1:]),
        names=[f"{k}: {mask_text(k, size, config.random_fraction)}" for k in config.masks],
        title=title,
    )


def write_run_report(out: Path, config: InpaintConfig, metrics: dict) -> None:
    """``out/report.md``: command, setup, the figure and the per-mask table."""
    size = metrics["image_size"]
    total = len(metrics["masks"]) * metrics["num_images"]
    rows = [
        f"| {k} | {mask_text(k, size, config.random_fraction)} | "
        f"{v['known_fraction']:.3f} | {v['mse_unknown']:.4f} | {v['mse_unknown_black_fill']:.4f} "
        f"| {v['known_max_abs_diff']} |"
        for k, v in metrics["masks"].items()
    ]
    check = (
        "All known pixels equal the input bit for bit (max abs difference 0.0)."
        if metrics["known_pixels_exact"]
        else "**Some known pixels differ from the input**: see metrics.json."
    )
    sections = [
        (
            "Command",
            f"```\n{PROG} " + " ".join(sys.argv[1:]) + "\n```\n\nConfig: `config.json`.",
        ),
        (
            "Setup",
            f"Model: the {metrics['model']} U-Net of `{metrics['checkpoint']}` "
            f"({metrics['parameters']:,} parameters, EMA weights of the checkpoint at step "
            f"{metrics['checkpoint_step']}), {metrics['conditioning']}. The first "
            f"{metrics['num_images']} MNIST test images, each under every mask. Sampler: "
            f"{metrics['sampler']} with {metrics['sample_steps']} steps and "
            f"{metrics['resample_jumps']} RePaint resampling jumps of {metrics['jump_length']} "
            f"steps: {metrics['model_evaluations_per_image']} model evaluations per image, "
            f"{metrics['sample_seconds']} s for all {total} images, compilation included.",
        ),
        (
            "Results",
            "Per mask, three rows: the masked input (unknown pixels in orange), the inpainted "
            "result and the original.\n\n![inpainting](inpaint_grid.png)",
        ),
        (
            "Numbers",
            "Mean squared error over the unknown pixels against the original, in [0, 1] pixel "
            "units; 'black fill' is the error of filling them with the background (0), for "
            "scale. Inpainting has many right answers, so a plausible digit that differs from "
            "the original still counts as error.\n\n"
            "| mask | what is hidden | known fraction | MSE (unknown) | MSE black fill | "
            "known max abs diff |\n| --- | --- | --- | --- | --- | --- |\n"
            + "\n".join(rows)
            + f"\n\n{check} Per-image values: `metrics.jsonl`.",
        ),
    ]
    write_report(out / "report.md", "MNIST inpainting", sections)
