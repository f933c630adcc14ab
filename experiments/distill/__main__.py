"""``python -m experiments.distill``: parse the flags, run :func:`experiments.distill.main`."""

import sys

from experiments._cli import run_main
from experiments.distill import PROG, DistillConfig, main

sys.exit(run_main(DistillConfig, main, prog=PROG))
