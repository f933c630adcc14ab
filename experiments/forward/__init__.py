"""Forward-process demonstrations (no training): how q(x_t | x_0) destroys data.

Run::

    python -m experiments.forward                          # writes runs/forward/
    python -m experiments.forward --data-dir ../shared/tensorflow_datasets
    python -m experiments.forward --help                   # every option, with defaults

No training: 18 s on this project's idle 2-core CPU, up to ~45 s under the usual load (most of
it XLA compilation and matplotlib). Four demonstrations, each a figure in ``--out`` and numbers
in metrics.json:

1. On an MNIST digit, the iterative chain ``x_t = sqrt(1 - b_t) x_{t-1} + sqrt(b_t) eps``
   (DDPM eq. 2, :func:`jaxdiff.forward.q_sample_iterative`) against the closed form
   ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (DDPM eq. 4, :func:`jaxdiff.forward.q_sample`)
   at the same steps: different draws, the same distribution (checked over many chains).
2. The noise-level progression of a few digits under the linear and the cosine schedule, with
   pixel histograms approaching N(0, 1).
3. Linear vs cosine schedules: beta, alpha and alpha-bar curves.
4. A 1-D three-component Gaussian mixture whose density (histogram, KDE and the exact mixture
   density) converges to N(0, 1) over the steps.

Outputs (the output contract, less what needs training): config.json, metrics.jsonl (one
record per inspected timestep), metrics.json, samples.npy (float32 ``(N, 1)``: the mixture's
samples at the last step, which should be N(0, 1)), noisy_digits.npy, PNG figures,
forward_process.gif and report.md. There is no model, hence no checkpoints/.
The package, one job a module: ``config`` (the flags and the shown timesteps), ``chains``
(demo 1), ``mixture`` (demo 4), ``figures`` (every figure and the GIF, demo 2 entirely),
``report`` (report.md) and ``main`` (the run).
"""

from experiments.forward.config import PROG, SHOW_T, ForwardConfig, build_schedule, show_timesteps
from experiments.forward.main import main

__all__ = ["PROG", "SHOW_T", "ForwardConfig", "build_schedule", "main", "show_timesteps"]
