"""Reference trajectories of diffusers' EDM and flow-matching schedulers for
``tests/test_diffusers_parity.py`` (the sibling of ``make_diffusers_fixtures.py``).

Runs, on identical inputs (a fixed starting sample and an analytic network ``f(x, c) = 0.7
tanh(x) + 0.3 x cos(c / 250)`` of the scheduler's model input and timestep):

- ``EDMEulerScheduler`` (Karras et al. 2022's preconditioning, rho = 7 sigmas, eps prediction);
- ``EDMDPMSolverMultistepScheduler`` (DPM-Solver++(2M) on the same sigmas);
- ``FlowMatchEulerDiscreteScheduler`` and ``FlowMatchHeunDiscreteScheduler`` with SD3's
  ``shift=3.0`` (velocity prediction on the rectified flow, ``x_t = (1 - t) x0 + t eps``);

and stores every state after every network evaluation, the scheduler's sigmas (its grid, as
jaxdiff path times: EDM's ``t = sigma``, the flow's ``t = sigma``) and the timesteps the network
saw, as a small float32 ``.npz`` with the diffusers and torch versions, so the tests need no
PyTorch. The EDM network's timestep is ``c_noise = log(sigma) / 4``, the flow's ``1000 t``.

Needs PyTorch and diffusers, in any environment (this script imports nothing from jaxdiff)::

    pip install torch --index-url https://download.pytorch.org/whl/cpu
    pip install diffusers numpy
    python benchmarks/make_diffusers_path_fixtures.py   # writes tests/fixtures/diffusers_paths.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import diffusers
import numpy as np
import torch

SHAPE = (4, 6)
SHIFT = 3.0
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "diffusers_paths.npz"


def model(x: np.ndarray, c) -> np.ndarray:
    """The analytic network of the fixtures (the test has its twin in jnp), float32 in/out."""
    c = np.float32(c)
    return (np.float32(0.7) * np.tanh(x) + np.float32(0.3) * x * np.cos(c / np.float32(250.0))
            ).astype(np.float32)  # fmt: skip


# name: (scheduler class, config, steps, whether the network input is scale_model_input's)
CASES = {
    "edm_euler": ("EDMEulerScheduler", dict(prediction_type="epsilon"), 10, True),
    "edm_dpm": ("EDMDPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++",
                solver_order=2, prediction_type="epsilon"), 10, True),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", dict(shift=SHIFT), 10, False),
    "flow_heun": ("FlowMatchHeunDiscreteScheduler", dict(shift=SHIFT), 8, False),
}  # fmt: skip


def run_case(name: str) -> dict[str, np.ndarray]:
    cls_name, config, steps, precondition = CASES[name]
    sched = getattr(diffusers, cls_name)(**config)
    sched.set_timesteps(steps)
    rng = np.random.default_rng(0)
    sigma0 = float(sched.sigmas[0])
    # the sample at the first sigma: EDM's x = x0 + sigma eps (N(0, sigma^2 + 1) scale), the
    # flow's x = eps at t = 1
    scale = float(np.sqrt(sigma0**2 + 1)) if precondition else 1.0
    x_T = (scale * rng.standard_normal(SHAPE)).astype(np.float32)
    sample = torch.from_numpy(x_T.copy())
    states, calls = [], []
    for t in sched.timesteps:
        model_in = sched.scale_model_input(sample, t) if precondition else sample
        out = torch.from_numpy(model(model_in.numpy(), float(t)))
        calls.append(float(t))
        sample = sched.step(out, t, sample).prev_sample
        states.append(sample.numpy().copy())
    sigmas = sched.sigmas.numpy().astype(np.float64)
    if name == "flow_heun":  # Heun's sigmas list each inner level twice: keep one
        sigmas = np.concatenate([sigmas[:1], sigmas[1:-1:2], sigmas[-1:]])
    return {
        f"{name}/x_T": x_T,
        f"{name}/sigmas": sigmas.astype(np.float32),
        f"{name}/calls": np.asarray(calls, np.float32),
        f"{name}/states": np.stack(states).astype(np.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    arrays: dict[str, np.ndarray] = {}
    for name in CASES:
        arrays.update(run_case(name))
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
