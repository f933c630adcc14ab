"""report.md of ``python -m experiments.forward``: one section per demonstration, with tables."""

from __future__ import annotations

import sys
from pathlib import Path

from experiments.forward.config import PROG, ForwardConfig
from jaxdiff import outputs


def write_report(out: Path, config: ForwardConfig, metrics: dict) -> None:
    """Write ``out / "report.md"`` from the config and the metrics (metrics.json)."""
    ivc = metrics["iterative_vs_closed_form"]
    ivc_rows = [
        f"| {r['t']} | {r['alphas_cumprod']:.4g} | {r['iterative_mean_abs_error']:.4f} | "
        f"{r['closed_form_mean_abs_error']:.4f} | {r['expected_mean_abs_error']:.4f} | "
        f"{r['iterative_std']:.4f} | {r['closed_form_std']:.4f} | {r['exact_std']:.4f} |"
        for r in ivc["per_timestep"]
    ]
    mix = metrics["mixture"]
    mix_rows = [
        f"| {r['t']} | {r['alphas_cumprod']:.4g} | {r['sample_mean']:.3f} | "
        f"{r['sample_std']:.3f} | {r['tv_exact_vs_normal']:.4f} | {r['kl_exact_vs_normal']:.2e} |"
        for r in mix["per_timestep"]
    ]
    abar = metrics["alphas_cumprod_last"]
    sections = [
        ("Command", f"```\n{PROG} " + " ".join(sys.argv[1:]) + "\n```"),
        (
            "1. Iterative chain vs closed form",
            f"The same MNIST digit (a {ivc['digit_label']}) noised {ivc['chains']} times by each "
            "method. The draws differ sample by sample, but both have mean sqrt(abar_t) x_0 and "
            "standard deviation sqrt(1 - abar_t). The per-pixel mean over the chains misses "
            "the exact mean sqrt(abar_t) x_0 by what sampling noise alone explains, sqrt(2 / pi) "
            "sqrt(1 - abar_t) / sqrt(chains), for both methods alike; their standard deviations "
            "agree with the exact one.\n\n"
            "![iterative vs closed form](iterative_vs_closed_form.png)\n\n"
            "| t | abar_t | mean error (iterative) | mean error (closed form) | expected error "
            "| std (iterative) | std (closed form) | exact std |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(ivc_rows),
        ),
        (
            "2. Noise-level progression",
            "Linear schedule (1e-4..0.02), then cosine (Nichol & Dhariwal), the same noise draw; "
            "under each column the pixel histogram (dashed: N(0, 1)). The cosine schedule keeps "
            "the digit recognisable for longer.\n\n![linear](forward_linear.png)\n\n"
            "![cosine](forward_cosine.png)\n\n"
            "GIF (top rows: linear, bottom rows: cosine):\n\n![GIF](forward_process.gif)",
        ),
        (
            "3. Linear vs cosine schedules",
            f"alphas_cumprod[-1]: linear {abar['linear']:.3g}, cosine {abar['cosine']:.3g}.\n\n"
            "![schedules](schedules.png)",
        ),
        (
            "4. A Gaussian mixture converging to N(0, 1)",
            f"Weights {mix['weights']}, means {mix['means']}, stds {mix['stds']} (data mean "
            f"{mix['data_mean']:.3f}, std {mix['data_std']:.3f}); {mix['samples']} samples, "
            f"{config.schedule} schedule. q(x_t) of a mixture is a mixture with components "
            "N(sqrt(abar) mu_k, abar sigma_k^2 + 1 - abar) (the exact, dashed curve); the KDE of "
            "the noised samples follows it to N(0, 1). samples.npy holds the samples at the last "
            "step.\n\n![mixture](mixture_density.png)\n\n![convergence](mixture_convergence.png)"
            "\n\n| t | abar_t | sample mean | sample std | TV to N(0, 1) | KL to N(0, 1) |\n"
            "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(mix_rows),
        ),
        ("Run", f"Total time {metrics['total_seconds']} s. Numbers: `metrics.json`."),
    ]
    outputs.write_report(out / "report.md", "Forward-process demonstrations", sections)
