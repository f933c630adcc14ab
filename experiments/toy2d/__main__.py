"""``python -m experiments.toy2d``: parse the flags, run :func:`experiments.toy2d.main`."""

import sys

from experiments._cli import run_main
from experiments.toy2d import PROG, Toy2dConfig, main

sys.exit(run_main(Toy2dConfig, main, prog=PROG))
