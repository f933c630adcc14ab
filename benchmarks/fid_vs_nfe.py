"""Sample quality per network evaluation: Frechet distance of every solver at several NFE.

Restores one finished ``experiments.mnist`` run (its config.json rebuilds the model), draws
``--num-samples`` samples with the same key for every (solver, NFE) pair and for DDPM on all T
steps, and evaluates them with the project's metric (:func:`jaxdiff.evaluation.evaluate_samples`).
NFE counts network evaluations per sample: the solver's steps, except Heun (2 steps - 1, the
largest that fits the budget). Each result is appended to ``OUT/results.jsonl`` as it is
measured (a rerun skips what is there); at the end ``OUT/fid_vs_nfe.md`` holds the table and
``OUT/fid_vs_nfe.png`` the plot (one line per solver).

Run (from the repository root; ~65 min for the CPU preset's checkpoint on a 2-core CPU)::

    python -m experiments.mnist --out runs/mnist
    python benchmarks/fid_vs_nfe.py runs/mnist --out runs/fid_vs_nfe
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np

from experiments import mnist
from jaxdiff.evaluation import evaluate_samples
from jaxdiff.runs import load_run
from jaxdiff.samplers import SAMPLERS, Guidance, Loop, sample, solver_from_flags

NFES = (10, 15, 20, 25, 50)


def steps_for(solver: str, nfe: int) -> int:
    return (nfe + 1) // 2 if solver == "heun" else nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="an experiments.mnist --out directory")
    parser.add_argument("--out", required=True, help="folder for results.jsonl, table and plot")
    parser.add_argument("--solvers", default=",".join(s for s in SAMPLERS),
                        help="comma-separated sampler names (default: all)")  # fmt: skip
    parser.add_argument("--nfe", default=",".join(map(str, NFES)))
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also DDPM on all T steps (the reference; default on)")  # fmt: skip
    args = parser.parse_args()
    solvers = args.solvers.split(",")
    unknown = [s for s in solvers if s not in SAMPLERS]
    if unknown:
        parser.error(f"unknown solvers {unknown}; choose from {', '.join(SAMPLERS)}")
    nfes = [int(n) for n in args.nfe.split(",")]

    run = load_run(args.run, args.step)
    config, apply, params, schedule = run.config, run.apply, run.params, run.schedule
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            r = json.loads(line)
            done[(r["solver"], r["steps"])] = r
    T = schedule.num_steps
    # the baseline after the first solver's sweep, so early results already compare
    sweeps = [[(s, steps_for(s, n), n) for n in nfes] for s in solvers]
    todo = sweeps[0] + [("ddpm", T, T)] * args.baseline + [v for sw in sweeps[1:] for v in sw]
    conditional = run.num_classes is not None
    shape = (args.num_samples, *run.spec.image_shape)
    labels = np.arange(args.num_samples) % 10 if conditional else None
    print(f"{args.run}: {len(todo)} variants of {args.num_samples} samples; {out}")
    for solver, steps, budget in todo:
        if (solver, steps) in done:
            continue
        t0 = time.perf_counter()
        result = sample(
            apply, params, schedule, shape, jax.random.key(args.seed),
            solver=solver_from_flags(solver, prediction=run.spec.train.prediction, clip_x0=1.0),
            steps=steps,
            guidance=Guidance(config["guidance_scale"], labels=labels, num_classes=10)
            if conditional else None,
            loop=Loop(chunk_size=250),
        )  # fmt: skip
        images = mnist.to_images(result.samples)
        seconds = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            m = evaluate_samples(images, "mnist", cache_dir=config["cache_dir"])["metrics"]
        record = dict(
            solver=solver, steps=steps, nfe=2 * steps - 1 if solver == "heun" else steps,
            nfe_budget=budget,
            fid=m["fid"]["samples"], fid_real=m["fid"]["real"],
            classifier_score=m["classifier_score"]["samples"], seconds=round(seconds, 1),
            num_samples=args.num_samples, date=time.strftime("%Y-%m-%d"),
        )  # fmt: skip
        with results_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        done[(solver, steps)] = record
        print(f"{solver:>12} {steps:4d} steps  NFE {record['nfe']:4d}  FID {record['fid']:7.2f}  "
              f"score {record['classifier_score']:.2f}  {seconds:5.0f} s", flush=True)  # fmt: skip
    write_report(out, list(done.values()), T)


def write_report(out: Path, records: list[dict], T: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [r for r in records if r["steps"] != T]
    base = next((r for r in records if r["solver"] == "ddpm" and r["steps"] == T), None)
    solvers = sorted({r["solver"] for r in sweep})
    nfes = sorted({r["nfe_budget"] for r in sweep})
    lines = ["| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "| --- |" + " --- |" * len(nfes)]  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in solvers:
        by_nfe = {r["nfe_budget"]: r["fid"] for r in sweep if r["solver"] == s}
        lines.append(f"| {s} | " + " | ".join(f"{by_nfe[n]:.1f}" if n in by_nfe else "-"
                                               for n in nfes) + " |")  # fmt: skip
        xs = sorted(by_nfe)
        ax.plot(xs, [by_nfe[x] for x in xs], marker="o", label=s)
    lines.append("\nColumns are NFE budgets; Heun uses 2 steps - 1 <= budget (9, 15, 19, 25, 49).")
    if base is not None:
        lines.append(f"\nDDPM on all {T} steps: FID {base['fid']:.1f} (NFE {T}); real-data floor "
                     f"{base['fid_real']:.1f}.")  # fmt: skip
        ax.axhline(base["fid"], color="k", linestyle="--", label=f"ddpm {T} steps")
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel("Frechet distance (lower is better)")
    ax.set_yscale("log")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fid_vs_nfe.png", dpi=120)
    (out / "fid_vs_nfe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
