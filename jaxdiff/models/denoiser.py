"""The calling convention every jaxdiff denoiser shares, with its inputs checked once."""

from __future__ import annotations

import jax
from flax import nnx

__all__ = ["Denoiser"]


class Denoiser(nnx.Module):
    """Base of the denoisers: ``model(x, t, labels=None, *, dropout_key=None) -> y``.

    ``x`` is a batch ``(B, ...)`` of noisy inputs, ``t`` the timesteps (``(B,)`` or a scalar),
    ``labels`` ``(B,)`` class labels or None, ``dropout_key`` a PRNG key that turns dropout on
    (None: off); ``y`` has ``x``'s shape. A subclass defines :meth:`check_inputs` (raise on bad
    input, return ``t`` as ``(B,)`` and the labels) and :meth:`predict` (the network itself).
    """

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array | int,
        labels: jax.Array | None = None,
        *,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        t, labels = self.check_inputs(x, t, labels)
        return self.predict(x, t, labels, dropout_key)

    def check_inputs(
        self, x: jax.Array, t: jax.Array | int, labels: jax.Array | None
    ) -> tuple[jax.Array, jax.Array | None]:
        """``(t (B,), labels (B,) or None)`` after checking shapes (and concrete values)."""
        raise NotImplementedError(f"{type(self).__name__} must define check_inputs")

    def predict(
        self, x: jax.Array, t: jax.Array, labels: jax.Array | None, dropout_key: jax.Array | None
    ) -> jax.Array:
        """The prediction for checked inputs."""
        raise NotImplementedError(f"{type(self).__name__} must define predict")
