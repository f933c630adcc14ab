"""``python -m experiments.forward``: parse the flags, run :func:`experiments.forward.main`."""

import sys

from experiments._cli import run_main
from experiments.forward import PROG, ForwardConfig, main

sys.exit(run_main(ForwardConfig, main, prog=PROG))
