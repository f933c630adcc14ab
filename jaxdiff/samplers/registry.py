"""The solvers by ``sampler=`` name."""

from __future__ import annotations

from jaxdiff.samplers.base import Solver
from jaxdiff.samplers.ddim import DDIM
from jaxdiff.samplers.ddpm import DDPM
from jaxdiff.samplers.dpmpp_2m import DPMSolverPP2M
from jaxdiff.samplers.dpmpp_2m_sde import DPMSolverPP2MSDE
from jaxdiff.samplers.dpmpp_3m import DPMSolverPP3M
from jaxdiff.samplers.euler import Euler
from jaxdiff.samplers.euler_ancestral import EulerAncestral
from jaxdiff.samplers.heun import Heun
from jaxdiff.samplers.unipc import UniPC

__all__ = ["SOLVERS", "make_solver"]

SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls
    for cls in (DDPM, DDIM, DPMSolverPP2M, DPMSolverPP3M, DPMSolverPP2MSDE, Euler,
                EulerAncestral, Heun, UniPC)
}  # fmt: skip


def make_solver(sampler: str, *, eta: float = 0.0, variance: str = "posterior") -> Solver:
    """The solver object of a ``sampler=`` name (one of :data:`SOLVERS`)."""
    if sampler not in SOLVERS:
        raise ValueError(
            f"unknown sampler {sampler!r}; choose one of {', '.join(map(repr, SOLVERS))}"
        )
    cls = SOLVERS[sampler]
    if cls is DDIM:
        return DDIM(eta=eta)
    if cls is DDPM:
        return DDPM(variance=variance)
    return cls()
