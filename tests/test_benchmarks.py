"""The jax-only benchmark scripts run end to end at toy sizes (issue #8).

The benchmarks are run by hand and their numbers go to ``benchmarks/RESULTS.md``; these checks
only make sure the scripts still work against the library (argument parsing, model building,
every sampling mode) so that a rerun does not start with a crash. Timings are printed, never
asserted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_samplers_toy2d_every_mode():
    bench = _load("bench_samplers")
    rows = bench.main(
        ["--model", "toy2d", "--T", "8", "--steps", "8", "--batch", "16", "--repeats", "1",
         "--modes", "loop", "scan", "chunked", "default", "--chunk", "4", "--dpm-steps", "4"]
    )  # fmt: skip
    body = rows[2:]
    # loop, scan (unroll 1), chunked (k=4), default, dpm++: one table row each.
    assert len(body) == 5
    labels = [row.split("|")[3].strip() for row in body]
    assert labels == [
        "Python loop of jitted steps",
        "one lax.scan, unroll=1",
        "steps_per_call=4, unroll=True",
        "sample() defaults",
        "sample() defaults",
    ]
    for row in body:
        images_per_s = float(row.split("|")[8])
        assert images_per_s > 0


def test_bench_samplers_rejects_unknown_model():
    bench = _load("bench_samplers")
    with pytest.raises(SystemExit):
        bench.main(["--model", "resnet"])


def test_bench_toy2d_step_compares_xla_options(capsys):
    bench = _load("bench_toy2d_step")
    bench.main(["--batches", "16", "--calls", "1", "--compare-xla-options", "1"])
    out = capsys.readouterr().out
    assert "| 16 |" in out
    assert "jaxdiff (YNNPACK off): median" in out
    assert "XLA defaults: median" in out


def test_gpu_check_refuses_a_cpu_and_smoke_tests_with_allow_cpu(tmp_path):
    check = _load("gpu_check")
    with pytest.raises(SystemExit, match="not a GPU"):
        check.main(["--out", str(tmp_path / "no")])
    argv = ["--allow-cpu", "--model", "tiny", "--batch", "8", "--steps", "2",
            "--sample-batch", "2", "--dpm-steps", "2", "--ddpm-steps", "3", "--dtypes", "float32",
            "--skip-experiment", "--out", str(tmp_path)]  # fmt: skip
    report = check.main(argv)
    assert [row["dtype"] for row in report["train"]] == ["float32"]
    assert all(row["step_ms"] > 0 and row["step_gflop"] > 0 for row in report["train"])
    assert report["rerun"]["bitwise_identical_10_steps"] is True
    assert set(report["sampling"]) == {"dpm++_2", "ddpm_3"}
    assert (tmp_path / "gpu_check.json").is_file()
    assert "| float32 | tiny | 8 |" in (tmp_path / "gpu_check.md").read_text()


def test_profile_step_attributes_the_ops_of_a_tiny_unet_step():
    """A subprocess: the script asks XLA to dump the optimised HLO, which works only before
    JAX starts."""
    import subprocess

    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--model", "unet_tiny",
         "--batch", "2", "--k", "1", "--calls", "1", "--top", "3"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "unet_tiny (jaxdiff layers), batch 2, K=1" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms/step" not in line]
    kinds = {line.split(" | ")[0][2:] for line in rows}
    assert {"convolution", "dot", "elementwise/other"} <= kinds
    assert "slowest 3 ops" in out


def test_profile_step_classifies_fused_hlo():
    bench = _load("profile_step")
    hlo = """HloModule m

%fused_computation.1 (p0: f32[4,8]) -> f32[8] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %c = f32[] constant(0)
  ROOT %r = f32[8]{0} reduce(%p0, %c), dimensions={0}, to_apply=%add
}

ENTRY %main (a: f32[4,8], w: f32[8,8]) -> f32[8] {
  %a = f32[4,8]{1,0} parameter(0)
  %w = f32[8,8]{1,0} parameter(1)
  %dot.1 = f32[4,8]{1,0} dot(%a, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}, \
metadata={op_name="jit(f)/transpose(jvp(f))/dot_general"}
  ROOT %reduce_fusion = f32[8]{0} fusion(%dot.1), kind=kLoop, calls=%fused_computation.1, \
metadata={op_name="jit(f)/jvp(f)/reduce_sum"}
}
"""
    ops = bench.parse_hlo(hlo)
    assert ops["dot.1"] == ("dot", True)
    assert ops["reduce_fusion"] == ("reduction", False)
