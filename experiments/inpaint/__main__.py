"""``python -m experiments.inpaint``: see :mod:`experiments.inpaint`."""

import sys

from experiments._cli import run_main
from experiments.inpaint.config import PROG, InpaintConfig
from experiments.inpaint.main import main

if __name__ == "__main__":
    sys.exit(run_main(InpaintConfig, main, prog=PROG))
