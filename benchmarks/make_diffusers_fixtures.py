"""Reference trajectories of diffusers' schedulers for ``tests/test_diffusers_parity.py``.

Runs each diffusers scheduler on identical inputs (the DDPM linear betas, T = 1000, a fixed
starting noise, an analytic "network" ``eps(x, t)`` and, for the stochastic ones, noise drawn
here and injected into diffusers' ``randn_tensor``) and stores what it produced as a small
``.npz`` (float32, with the diffusers and torch versions), so the tests need no PyTorch. Every
state is stored in the variance-preserving form ``x_t = alpha_t x0 + sigma_t eps`` that
jaxdiff uses (diffusers' Euler-family samples are ``x / alpha``; they are multiplied back).

Needs PyTorch and diffusers, in any environment (this script imports nothing from jaxdiff)::

    pip install torch --index-url https://download.pytorch.org/whl/cpu
    pip install diffusers numpy
    python benchmarks/make_diffusers_fixtures.py   # writes tests/fixtures/diffusers_parity.npz
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import diffusers
import numpy as np
import torch

T = 1000
BETAS = np.linspace(1e-4, 0.02, T)  # DDPM's linear schedule, float64
SHAPE = (4, 6)
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "diffusers_parity.npz"


def model_eps(x: np.ndarray, t) -> np.ndarray:
    """The analytic network of the fixtures (the test has its twin in jnp), float32 in/out."""
    t = np.float32(t)
    return (np.float32(0.7) * np.tanh(x) + np.float32(0.3) * x * np.cos(t / np.float32(250.0))
            ).astype(np.float32)  # fmt: skip


# name: (scheduler class, config, steps, extra step kwargs, works on x / alpha)
CASES = {
    "ddpm": ("DDPMScheduler", dict(variance_type="fixed_small", clip_sample=False), 10, {}, False),
    "ddim": ("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=True), 10, {}, False),
    "ddim_eta": ("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=True), 10,
                 dict(eta=0.6), False),
    "dpm++": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2,
              final_sigmas_type="sigma_min"), 10, {}, False),
    "dpm++_20": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2,
                 final_sigmas_type="sigma_min"), 20, {}, False),
    "dpm++3m": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=3,
                final_sigmas_type="sigma_min"), 12, {}, False),
    "dpm++2m-sde": ("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++",
                    solver_order=2, final_sigmas_type="sigma_min"), 10, {}, False),
    "euler": ("EulerDiscreteScheduler", {}, 10, {}, True),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}, 10, {}, True),
    "heun": ("HeunDiscreteScheduler", {}, 8, {}, True),
    "unipc": ("UniPCMultistepScheduler", dict(solver_order=2, solver_type="bh2", predict_x0=True,
              final_sigmas_type="sigma_min"), 10, {}, False),
}  # fmt: skip


class _InjectedNoise:
    """Replaces ``randn_tensor`` in a scheduler module: returns the next stored draw."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.draws = rng, []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        z = self.rng.standard_normal(tuple(shape)).astype(np.float32)
        self.draws.append(z)
        return torch.from_numpy(z).to(dtype or torch.float32)


def run_case(name: str) -> dict[str, np.ndarray]:
    cls_name, config, steps, step_kw, ve = CASES[name]
    cls = getattr(diffusers, cls_name)
    sched = cls(num_train_timesteps=T, trained_betas=BETAS, timestep_spacing="trailing", **config)
    sched.set_timesteps(steps)
    module = importlib.import_module(cls.__module__)
    noise = _InjectedNoise(np.random.default_rng(1))
    if hasattr(module, "randn_tensor"):
        module.randn_tensor = noise
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal(SHAPE).astype(np.float32)  # variance-preserving x at t = T - 1
    abar = torch.cumprod(1 - torch.tensor(BETAS, dtype=torch.float32), 0).numpy()
    alpha_T = np.sqrt(abar[sched.timesteps[0].long().item()])
    sample = torch.from_numpy(x_T / alpha_T if ve else x_T)
    states, calls = [], []
    for t in sched.timesteps:
        model_in = sched.scale_model_input(sample, t) if ve else sample
        eps = torch.from_numpy(model_eps(model_in.numpy(), round(float(t))))
        calls.append(round(float(t)))
        out = sched.step(eps, t, sample, **step_kw)
        sample = out.prev_sample
        states.append(sample.numpy().copy())
    states = np.stack(states)
    if ve:  # back to x_t = alpha_t x0 + sigma_t eps at each state's noise level
        next_sigma = sched.sigmas.numpy()[1 : len(states) + 1]  # Heun's lists each level twice
        states = states / np.sqrt(next_sigma**2 + 1)[:, None, None]
    return {
        f"{name}/x_T": x_T,
        f"{name}/timesteps": sched.timesteps.numpy().round().astype(np.int64),
        f"{name}/calls": np.asarray(calls, np.int64),
        f"{name}/states": states.astype(np.float32),
        f"{name}/noise": (np.stack(noise.draws) if noise.draws else np.zeros((0, *SHAPE))).astype(
            np.float32
        ),
    }


def karras_timesteps() -> dict[str, np.ndarray]:
    """diffusers' Karras-sigma timesteps (DPMSolverMultistep, rounded) for several N."""
    out = {}
    for n in (10, 20, 25, 50):
        sched = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=T, trained_betas=BETAS, use_karras_sigmas=True
        )
        sched.set_timesteps(n)
        out[f"karras/{n}"] = sched.timesteps.numpy().astype(np.int64)
    return out


def spacing_timesteps() -> dict[str, np.ndarray]:
    out = {}
    for spacing in ("leading", "trailing", "linspace"):
        for n in (10, 50, 333):
            sched = diffusers.DDIMScheduler(num_train_timesteps=T, trained_betas=BETAS,
                                            timestep_spacing=spacing)  # fmt: skip
            sched.set_timesteps(n)
            out[f"spacing/{spacing}/{n}"] = sched.timesteps.numpy().astype(np.int64)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    arrays: dict[str, np.ndarray] = {"betas": BETAS}
    for name in CASES:
        arrays.update(run_case(name))
    arrays.update(karras_timesteps())
    arrays.update(spacing_timesteps())
    arrays["versions"] = np.array(
        [f"diffusers {diffusers.__version__}", f"torch {torch.__version__}",
         f"numpy {np.__version__}"]
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} KiB): "
          f"{', '.join(CASES)}; {arrays['versions']}")  # fmt: skip


if __name__ == "__main__":
    main()
