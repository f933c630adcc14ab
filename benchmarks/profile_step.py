"""Where a training step's time goes: the compiled step's ops, timed by the profiler, by kind.

Builds the training step of ``experiments.mnist``'s CPU preset (a U-Net or CNN preset of
:data:`jaxdiff.models.PRESETS`, cosine schedule, Min-SNR-5 loss, batch 32 of random 28x28
images), runs it under :func:`jax.profiler.trace` and adds up the profiler's per-op events (the
thunks of XLA:CPU, named like the instructions of the optimised HLO module, which XLA dumps
into a temporary folder). Each op is classed by what its HLO does (convolution, dot,
reduction, the rest) and by pass (forward, or backward: its source op name contains
``transpose(``, JAX's name for the VJP); the table is ms per training step.

Run (from the repository root)::

    python benchmarks/profile_step.py                              # unet_compact, batch 32
    python benchmarks/profile_step.py --model unet_mnist_small --batch 32 --top 20
    python benchmarks/profile_step.py --layers flax     # nnx.GroupNorm and nnx.Conv (before)

The sum of the ops is less than the step's wall time: between ops the thunk executor waits,
and small ops run concurrently on the two cores.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OPNAME = re.compile(r'op_name="([^"]*)"')
_COMP = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")


def parse_hlo(text: str) -> dict[str, tuple[str, bool]]:
    """Optimised HLO text -> ``{instruction: (kind, backward)}`` for every instruction.

    kind: "convolution", "dot", "reduction" (reduce, reduce-window), "copy/transpose", or
    "elementwise/other"; a fusion takes the first of these that its computation contains.
    """
    comps: dict[str, list[tuple[str, str, str, str]]] = collections.defaultdict(list)
    current = None
    for line in text.splitlines():
        if (m := _COMP.match(line)) and "=" not in line.split("{")[0]:
            current = m.group(1)
            continue
        if current and (m := _INSTR.match(line)):
            calls = _CALLS.search(line)
            opname = _OPNAME.search(line)
            comps[current].append(
                (
                    m.group(1),
                    m.group(2),
                    calls.group(1) if calls else "",
                    opname.group(1) if opname else "",
                )
            )

    order = ("convolution", "dot", "reduction", "copy/transpose")

    def kind_of(opcode: str, callee: str, seen=()) -> str:
        if opcode == "convolution":
            return "convolution"
        if opcode == "dot":
            return "dot"
        if opcode in ("reduce", "reduce-window"):
            return "reduction"
        if opcode in ("copy", "transpose"):
            return "copy/transpose"
        if opcode == "fusion" and callee and callee not in seen:
            kinds = {kind_of(op, c, (*seen, callee)) for _, op, c, _ in comps.get(callee, [])}
            return next((k for k in order if k in kinds), "elementwise/other")
        return "elementwise/other"

    out = {}
    for instrs in comps.values():
        for name, opcode, callee, opname in instrs:
            backward = "transpose(" in opname
            if opcode == "fusion" and not opname:
                names = [o for _, _, _, o in comps.get(callee, []) if o]
                backward = any("transpose(" in o for o in names)
            out[name] = (kind_of(opcode, callee), backward)
    return out


def main(argv=None) -> None:
    # XLA reads its flags when JAX starts its backend: a script run, not an import after JAX ran.
    dump = tempfile.mkdtemp(prefix="jaxdiff-hlo-")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump} --xla_dump_hlo_as_text"
    ).strip()
    import jax
    import numpy as np

    from benchmarks.bench_train import layers
    from jaxdiff.runs import ModelSpec
    from jaxdiff.train import TrainConfig, Trainer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="unet_compact", help="a jaxdiff.models preset")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--calls", type=int, default=4, help="profiled compiled calls")
    parser.add_argument("--k", type=int, default=None, help="steps per call (trainer default)")
    parser.add_argument("--top", type=int, default=12, help="slowest single ops to list")
    parser.add_argument(
        "--layers", choices=("jaxdiff", "flax"), default="jaxdiff",
        help="U-Net GroupNorm and conv layers: jaxdiff's (default) or nnx's (before)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    spec = ModelSpec(
        model=args.model, image_size=28, schedule="cosine",
        train=TrainConfig(learning_rate=2e-3, loss_weighting="min_snr", steps_per_call=args.k),
    )  # fmt: skip
    with layers(args.layers):
        apply, params, schedule = spec.build()
    trainer = Trainer(apply, schedule, spec.train)
    k = trainer.steps_per_call
    rng = np.random.default_rng(0)
    batch = trainer.put_batch(
        {"x": rng.uniform(-1, 1, size=(k, args.batch, 28, 28, 1)).astype(np.float32)},
        stacked=True,
    )
    state = trainer.init_state(params, 0)
    state, metrics = trainer.steps(state, batch)  # compile
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.calls):
        state, metrics = trainer.steps(state, batch)
    jax.block_until_ready(metrics)
    wall = (time.perf_counter() - start) / (args.calls * k)

    trace_dir = tempfile.mkdtemp(prefix="jaxdiff-trace-")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(args.calls):
            state, metrics = trainer.steps(state, batch)
        jax.block_until_ready(metrics)
    (trace,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
    events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events

    modules = sorted(glob.glob(f"{dump}/*after_optimizations.txt"), key=os.path.getsize)
    if not modules:
        raise SystemExit("XLA wrote no HLO dump: run profile_step.py as a script, not after JAX")
    ops = parse_hlo(Path(modules[-1]).read_text())  # the training step is the largest module
    per_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and e.get("name") in ops:
            per_op[e["name"]] += e.get("dur", 0.0) / 1e3  # us -> ms
    steps = args.calls * k
    by_kind: dict[tuple[str, str], float] = collections.defaultdict(float)
    for name, ms in per_op.items():
        kind, backward = ops[name]
        by_kind[kind, "backward" if backward else "forward"] += ms / steps
    total = sum(by_kind.values())
    print(
        f"{args.model} ({args.layers} layers), batch {args.batch}, K={k}: "
        f"{wall * 1e3:.1f} ms per step wall "
        f"({args.batch / wall:.1f} images/s); ops sum to {total:.1f} ms per step; "
        f"jax {jax.__version__}, {jax.default_backend()}"
    )
    print("\n| op kind | forward ms/step | backward ms/step | share of the ops |")
    print("|---|---|---|---|")
    kinds = sorted(
        {k for k, _ in by_kind}, key=lambda k: -by_kind[k, "forward"] - by_kind[k, "backward"]
    )
    for kind in kinds:
        f, b = by_kind[kind, "forward"], by_kind[kind, "backward"]
        print(f"| {kind} | {f:.1f} | {b:.1f} | {100 * (f + b) / total:.0f}% |")
    print(f"\nslowest {args.top} ops (ms per step):")
    for name, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]:
        kind, backward = ops[name]
        print(f"  {ms / steps:7.2f}  {name}  ({kind}, {'backward' if backward else 'forward'})")


if __name__ == "__main__":
    main()
