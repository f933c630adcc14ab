"""The solvers by name: the one table of the command-line / ``solver="..."`` names.

A new solver is one module (a :class:`~jaxdiff.samplers.base.Solver` subclass) plus one line
in :data:`SOLVERS`; or, without registering it, pass its object to
:func:`jaxdiff.samplers.sample` directly.
"""

from __future__ import annotations

import dataclasses

from jaxdiff.samplers.base import Solver
from jaxdiff.samplers.ddim import DDIM
from jaxdiff.samplers.ddpm import DDPM
from jaxdiff.samplers.dpmpp_2m import DPMSolverPP2M
from jaxdiff.samplers.dpmpp_2m_sde import DPMSolverPP2MSDE
from jaxdiff.samplers.dpmpp_3m import DPMSolverPP3M
from jaxdiff.samplers.edm import EDMSampler
from jaxdiff.samplers.euler import Euler
from jaxdiff.samplers.euler_ancestral import EulerAncestral
from jaxdiff.samplers.flow import FlowEuler, FlowHeun
from jaxdiff.samplers.heun import Heun
from jaxdiff.samplers.unipc import UniPC

__all__ = ["SOLVERS", "make_solver", "solver_from_flags"]

SOLVERS: dict[str, type[Solver]] = {
    "ddpm": DDPM,
    "ddim": DDIM,
    "dpm++": DPMSolverPP2M,
    "dpm++3m": DPMSolverPP3M,
    "dpm++2m-sde": DPMSolverPP2MSDE,
    "euler": Euler,
    "euler-a": EulerAncestral,
    "heun": Heun,
    "unipc": UniPC,
    "edm": EDMSampler,
    "flow-euler": FlowEuler,
    "flow-heun": FlowHeun,
}


def make_solver(solver: str | Solver, **options) -> Solver:
    """The solver object of a name in :data:`SOLVERS` with ``options`` as its fields, or
    ``solver`` itself when it already is a :class:`Solver` (then no ``options``).

    ``make_solver("ddim")`` is ``DDIM()``, the class's defaults; ``make_solver("ddim",
    eta=0.5)`` is ``DDIM(eta=0.5)``; an option the solver does not have is a ``ValueError``
    that names it (``make_solver("dpm++", eta=0.5)``).
    """
    if isinstance(solver, Solver):
        if options:
            raise TypeError(
                f"make_solver got a {type(solver).__name__} object and options "
                f"{sorted(options)}; set them on the object instead"
            )
        return solver
    if isinstance(solver, type) and issubclass(solver, Solver):
        raise TypeError(
            f"solver must be a solver object or name, got the class {solver.__name__}; "
            f"write {solver.__name__}()"
        )
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(
            f"unknown sampler {solver!r}; choose one of {', '.join(map(repr, SOLVERS))}"
        )
    cls = SOLVERS[solver]
    try:
        return cls(**options)
    except TypeError:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(known))
        if not unknown:
            raise
        names = ", ".join(f"{k}={options[k]!r}" for k in unknown)
        raise ValueError(
            f"{names} does not apply to sampler={solver!r} ({cls.__name__} has the options "
            f"{', '.join(known)})"
        ) from None


def solver_from_flags(sampler: str, **flags) -> Solver:
    """The solver of a command line's ``--sampler`` and its other sampler flags (``eta``,
    ``variance``, ``prediction``, ``clip_x0``, ...): the one place where the experiments' flags
    become a solver object.

    A flag the solver has becomes its field (and is checked there); a flag it does not have
    is dropped (an experiment's ``--variance`` with ``--sampler ddim``: the experiment's
    config decides whether that is an error).
    """
    if sampler not in SOLVERS:
        return make_solver(sampler)  # the unknown-sampler error
    fields = {f.name for f in dataclasses.fields(SOLVERS[sampler])}
    return make_solver(sampler, **{k: v for k, v in flags.items() if k in fields})
