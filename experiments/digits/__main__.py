"""``python -m experiments.digits``: see :mod:`experiments.digits`."""

import sys

from experiments._cli import run_main
from experiments.digits.config import PROG, DigitsConfig
from experiments.digits.main import main

if __name__ == "__main__":
    sys.exit(run_main(DigitsConfig, main, prog=PROG))
