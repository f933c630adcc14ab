"""``python -m experiments.mnist``: see :mod:`experiments.mnist`."""

import sys

from experiments._cli import run_main
from experiments.mnist.config import PROG, MnistConfig
from experiments.mnist.main import main

if __name__ == "__main__":
    sys.exit(run_main(MnistConfig, main, prog=PROG))
