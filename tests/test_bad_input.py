"""Every row of README.md's bad-input table, reproduced: the exact message a user sees.

Each case is a function that makes one mistake and returns what the user sees: for the library,
``ExceptionType: message``; for a command line, the ``error:`` line (after checking exit code 2,
no traceback, and the usage for a bad command line). The README table is the documentation of
these cases, so the test compares both ways: every README row has a case, every case has a row,
and the README shows the message verbatim (``DIR`` stands for a temporary folder).

Print the table rows from the current code with::

    python tests/test_bad_input.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import evaluate, mnist, toy2d  # noqa: E402
from experiments._cli import run_main  # noqa: E402
from jaxdiff import data, metrics, models, samplers, train  # noqa: E402
from jaxdiff.checkpoint import Checkpointer  # noqa: E402
from jaxdiff.schedules import make_schedule  # noqa: E402

START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"


def _zeros_model(params, x, t, labels=None, **kwargs):
    return jnp.zeros_like(x)


def _raised(fn: Callable[[], object]) -> str:
    try:
        fn()
    except Exception as e:  # the case's point is the exception; any type is reported
        return f"{type(e).__name__}: {e}"
    raise AssertionError("no error was raised")


def _cli(module, cls, argv: list[str], *, usage: bool) -> str:
    """Run a command line in-process; return its ``error:`` line after checking the contract."""
    prog = f"python -m experiments.{module.__name__.rsplit('.', 1)[-1]}"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = run_main(cls, module.main, argv, prog=prog)
        except SystemExit as e:  # argparse errors exit from inside the parser
            code = e.code
    text = err.getvalue()
    assert code == 2, text
    assert "Traceback" not in text, text
    assert ("usage:" in text) == usage, text
    lines = [line for line in text.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, text
    return lines[0].split(": error: ", 1)[1]


def _sample(**kwargs):
    schedule = make_schedule("linear", 1000)
    return samplers.sample(_zeros_model, {}, schedule, (2, 4), jax.random.key(0), **kwargs)


def _devices_error() -> str:
    """A real 4-device mesh needs the flag before jax starts: run it in a fresh process."""
    code = (
        "import jax\n"
        "from jaxdiff.sharding import make_mesh, check_batch_size\n"
        "try:\n"
        "    check_batch_size(30, make_mesh())\n"
        "except ValueError as e:\n"
        "    print(f'ValueError: {e}')\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _mismatched_checkpoint(tmp: Path) -> str:
    with Checkpointer(tmp / "ckpt", async_save=False) as ckpt:
        ckpt.save(1, {"params": {"w": jnp.zeros((3, 8))}})
    with Checkpointer(tmp / "ckpt") as ckpt:
        return _raised(lambda: ckpt.restore({"params": {"w": jnp.zeros((3, 16))}}))


def _toy2d_other_config(tmp: Path) -> str:
    out = tmp / "moons"
    out.mkdir()
    earlier = toy2d.resolve(toy2d.Toy2dConfig(out=str(out), seed=1))
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(earlier)))
    return _cli(toy2d, toy2d.Toy2dConfig, ["--out", str(out)], usage=True)


def _evaluate_out_of_range(tmp: Path) -> str:
    path = tmp / "samples.npy"
    np.save(path, np.full((4, 28, 28, 1), 255.0, np.float32))
    argv = ["--kind", "mnist", "--samples", str(path)]
    return _cli(evaluate, evaluate.EvaluateConfig, argv, usage=True)


def _out_inside_a_file(tmp: Path) -> str:
    (tmp / "notes.txt").write_text("not a folder")
    argv = ["--out", str(tmp / "notes.txt" / "run"), "--train-steps", "1"]
    return _cli(toy2d, toy2d.Toy2dConfig, argv, usage=True)


def _no_data(tmp: Path) -> list[str]:
    return ["--data-dir", "/nonexistent/tfds", "--out", str(tmp)]


@contextlib.contextmanager
def _fresh_machine(tmp: Path, **env: str):
    """A user's machine with no prepared MNIST: empty HOME and cache, no TFDS_DATA_DIR."""
    saved = dict(os.environ)
    os.environ.pop("TFDS_DATA_DIR", None)
    os.environ.update({"HOME": str(tmp / "home"), "JAXDIFF_CACHE_DIR": str(tmp / "cache"), **env})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _mirror(tmp: Path, size: int) -> str:
    """A file:// mirror whose t10k images file has ``size`` zero bytes (not the real file)."""
    folder = tmp / "mirror"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(size))
    return folder.as_uri() + "/"


def _download(tmp: Path, url: str, **env: str) -> str:
    with _fresh_machine(tmp, JAXDIFF_MNIST_URL=url, **env):
        message = _raised(lambda: data.load_mnist("test", progress=False))
    assert not list((tmp / "cache").rglob("*.*")), "a failed download left files in the cache"
    return message


def _download_http_error(tmp: Path) -> str:
    import functools
    import http.server
    import threading

    (tmp / "empty").mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp / "empty"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    try:
        message = _download(tmp, f"http://127.0.0.1:{port}/")
    finally:
        httpd.shutdown()
        httpd.server_close()
    return message.replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")


def _download_cli(tmp: Path, **env: str) -> str:
    with _fresh_machine(tmp, **env):
        return _cli(mnist, mnist.MnistConfig, ["--out", str(tmp / "run")], usage=False)


def _bad_checksum_table(tmp: Path) -> str:
    (tmp / "sums.tsv").write_text("t10k-images-idx3-ubyte.gz 1648877 8d422c7b\n")
    return _download(tmp, _mirror(tmp, 10), JAXDIFF_MNIST_SHA256=str(tmp / "sums.tsv"))


def _no_samples(tmp: Path) -> list[str]:
    return ["--kind", "mnist", "--samples", "/nonexistent.npy"]


# id -> (what the user does, function(tmp folder) -> what the user sees)
CASES: dict[str, tuple[str, Callable[[Path], str]]] = {
    # ---- library --------------------------------------------------------------------------
    "schedule-steps": (
        '`make_schedule("linear", 0)`',
        lambda tmp: _raised(lambda: make_schedule("linear", 0)),
    ),
    "schedule-kind": (
        '`make_schedule("cosin")`',
        lambda tmp: _raised(lambda: make_schedule("cosin")),
    ),
    "schedule-beta": (
        '`make_schedule("linear", beta_end=1.5)`',
        lambda tmp: _raised(lambda: make_schedule("linear", beta_end=1.5)),
    ),
    "sampler-name": (
        '`sample(..., solver="plms")`',
        lambda tmp: _raised(lambda: _sample(solver="plms")),
    ),
    "sampler-steps": (
        "`sample(..., steps=2000)` on a 1000-step schedule",
        lambda tmp: _raised(lambda: _sample(steps=2000)),
    ),
    "guidance-unconditional": (
        "`sample(..., guidance=Guidance(3.0))` without `num_classes`",
        lambda tmp: _raised(lambda: _sample(guidance=samplers.Guidance(3.0))),
    ),
    "labels-count": (
        "`sample(..., guidance=Guidance(labels=[1, 2, 3], num_classes=10))` for 2 samples",
        lambda tmp: _raised(
            lambda: _sample(guidance=samplers.Guidance(labels=jnp.array([1, 2, 3]), num_classes=10))
        ),
    ),
    "mask-shape": (
        "`Inpaint(mask=(2, 3) array, known=(2, 4) array)`",
        lambda tmp: _raised(lambda: samplers.Inpaint(jnp.ones((2, 3)), jnp.zeros((2, 4)))),
    ),
    "ddim-eta": (
        "`DDIM(eta=-0.5)`",
        lambda tmp: _raised(lambda: samplers.DDIM(eta=-0.5)),
    ),
    "learning-rate": (
        "`TrainConfig(learning_rate=-1e-3)`",
        lambda tmp: _raised(lambda: train.TrainConfig(learning_rate=-1e-3)),
    ),
    "ema-decay": (
        "`TrainConfig(ema_decay=1.0)`",
        lambda tmp: _raised(lambda: train.TrainConfig(ema_decay=1.0)),
    ),
    "prediction": (
        '`TrainConfig(prediction="score")`',
        lambda tmp: _raised(lambda: train.TrainConfig(prediction="score")),
    ),
    "nan-data": (
        '`trainer.put_data({"x": x})` with a NaN in `x`',
        lambda tmp: _raised(
            lambda: train.Trainer(_zeros_model, make_schedule("linear", 10)).put_data(
                {"x": np.array([[0.5, 0.1], [0.2, np.nan]], np.float32)}
            )
        ),
    ),
    "batch-devices": (
        "global batch 30 on 4 devices",
        lambda tmp: _devices_error(),
    ),
    "unet-groups": (
        "`UNet(1, 28, base_channels=12, norm_groups=8)`",
        lambda tmp: _raised(
            lambda: models.UNet(1, 28, base_channels=12, norm_groups=8, rngs=nnx.Rngs(0))
        ),
    ),
    "unet-size": (
        "32x32 images into `unet_mnist_small()` (built for 28x28)",
        lambda tmp: _raised(
            lambda: models.unet_mnist_small(rngs=nnx.Rngs(0))(
                jnp.zeros((1, 32, 32, 1)), jnp.zeros((1,), jnp.int32)
            )
        ),
    ),
    "pixel-range": (
        "`images_bits_per_dim(...)` on uint8-range images (0..255)",
        lambda tmp: _raised(
            lambda: metrics.images_bits_per_dim(
                _zeros_model, {}, make_schedule("linear", 10), np.full((2, 8, 8, 1), 255.0)
            )
        ),
    ),
    "mnist-missing": (
        '`load_mnist("train", data_dir="/nonexistent/tfds")`',
        lambda tmp: _raised(lambda: data.load_mnist("train", data_dir="/nonexistent/tfds")),
    ),
    "checkpoint-missing": (
        "`Checkpointer(DIR).restore(state)` on an empty folder",
        lambda tmp: _raised(lambda: Checkpointer(tmp).restore({"w": jnp.zeros(2)})),
    ),
    "checkpoint-mismatch": (
        "restoring a checkpoint of another model configuration",
        _mismatched_checkpoint,
    ),
    # ---- command lines ----------------------------------------------------------------------
    "cli-steps": (
        "`python -m experiments.mnist --train-steps 0`",
        lambda tmp: _cli(mnist, mnist.MnistConfig, ["--train-steps", "0"], usage=True),
    ),
    "cli-choice": (
        "`python -m experiments.mnist --sampler plms`",
        lambda tmp: _cli(mnist, mnist.MnistConfig, ["--sampler", "plms"], usage=True),
    ),
    "cli-number": (
        "`python -m experiments.mnist --learning-rate fast`",
        lambda tmp: _cli(mnist, mnist.MnistConfig, ["--learning-rate", "fast"], usage=True),
    ),
    "cli-unknown": (
        "`python -m experiments.mnist --epochs 3` (no such flag)",
        lambda tmp: _cli(mnist, mnist.MnistConfig, ["--epochs", "3"], usage=True),
    ),
    "cli-guidance": (
        "`python -m experiments.mnist --no-class-conditional --guidance-scale 3`",
        lambda tmp: _cli(
            mnist,
            mnist.MnistConfig,
            ["--no-class-conditional", "--guidance-scale", "3"],
            usage=True,
        ),
    ),
    "cli-resume-overwrite": (
        "`python -m experiments.mnist --resume --overwrite`",
        lambda tmp: _cli(mnist, mnist.MnistConfig, ["--resume", "--overwrite"], usage=True),
    ),
    "cli-data": (
        "`python -m experiments.mnist --data-dir /nonexistent/tfds`",
        lambda tmp: _cli(mnist, mnist.MnistConfig, _no_data(tmp), usage=False),
    ),
    "download-offline": (
        "`python -m experiments.mnist` with no prepared MNIST and no network (simulated with "
        "`JAXDIFF_MNIST_URL=http://127.0.0.1:9/`)",
        lambda tmp: _download_cli(tmp, JAXDIFF_MNIST_URL="http://127.0.0.1:9/"),
    ),
    "download-http-error": (
        '`load_mnist("test")` from a mirror that answers 404',
        _download_http_error,
    ),
    "download-checksum": (
        '`load_mnist("test")` from a mirror serving another file of the official size',
        lambda tmp: _download(tmp, _mirror(tmp, 1_648_877)),
    ),
    "download-truncated": (
        '`load_mnist("test")` when the transfer stops after 1,000 bytes, twice',
        lambda tmp: _download(tmp, _mirror(tmp, 1_000)),
    ),
    "download-cache-unwritable": (
        "`JAXDIFF_CACHE_DIR=DIR/notes.txt/cache python -m experiments.mnist` (a file in the path)",
        lambda tmp: (
            (tmp / "notes.txt").write_text("not a folder"),
            _download_cli(tmp, JAXDIFF_CACHE_DIR=str(tmp / "notes.txt" / "cache")),
        )[1],
    ),
    "download-bad-checksum-table": (
        "`JAXDIFF_MNIST_SHA256=sums.tsv` with spaces instead of tabs",
        _bad_checksum_table,
    ),
    "cli-schedule-conflict": (
        "`python -m experiments.toy2d --tutorial-schedule --schedule cosine`",
        lambda tmp: _cli(
            toy2d, toy2d.Toy2dConfig, ["--tutorial-schedule", "--schedule", "cosine"], usage=True
        ),
    ),
    "cli-resume-nothing": (
        "`python -m experiments.toy2d --resume --out DIR` (no run there)",
        lambda tmp: _cli(
            toy2d, toy2d.Toy2dConfig, ["--resume", "--out", str(tmp / "none")], usage=True
        ),
    ),
    "cli-out-differs": (
        "`python -m experiments.toy2d --out DIR` where DIR holds a run with `--seed 1`",
        _toy2d_other_config,
    ),
    "cli-out-unwritable": (
        "`python -m experiments.toy2d --out DIR/notes.txt/run` (a file in the path)",
        _out_inside_a_file,
    ),
    "cli-samples-range": (
        "`python -m experiments.evaluate --kind mnist --samples S.npy` with pixels 0..255",
        _evaluate_out_of_range,
    ),
    "cli-samples-missing": (
        "`python -m experiments.evaluate --kind mnist --samples /nonexistent.npy`",
        lambda tmp: _cli(evaluate, evaluate.EvaluateConfig, _no_samples(tmp), usage=True),
    ),
}


def seen(case: str, tmp: Path) -> str:
    """What the user sees for ``case``, with the temporary folder written as ``DIR``."""
    message = CASES[case][1](tmp)
    return message.replace(str(tmp), "DIR")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme_rows() -> dict[str, str]:
    """``{case: message}`` from README.md's table (between the bad-input-table markers)."""
    readme = (ROOT / "README.md").read_text()
    assert START in readme and END in readme, "README.md lost its bad-input table markers"
    rows = {}
    for line in readme.split(START, 1)[1].split(END, 1)[0].splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \| .* \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2).replace("\\|", "|")
    return rows


def test_the_readme_table_has_a_row_for_every_case_and_at_least_twenty():
    rows = readme_rows()
    assert len(CASES) >= 20
    assert sorted(rows) == sorted(CASES)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_user_sees_exactly_the_readme_message(case, tmp_path):
    assert seen(case, tmp_path) == readme_rows()[case]


if __name__ == "__main__":
    print("| Case | You do | You see |\n|---|---|---|")
    for name, (what, _) in CASES.items():
        with tempfile.TemporaryDirectory() as d:
            print(f"| `{name}` | {_cell(what)} | {_cell(seen(name, Path(d)))} |")
