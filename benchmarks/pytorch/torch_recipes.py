"""PyTorch ports of jaxdiff's three tutorial recipes, for measurement only (issue #8).

Each port mirrors the jaxdiff model layer for layer (same widths, norms, activations, attention,
time embedding, so the parameter counts are equal; ``tests/test_torch_recipes.py`` checks that
and, after copying jaxdiff's parameters in with :func:`load_jax_params`, that the forward passes
agree) and the jaxdiff recipe step for step (same optimiser, clipping, EMA with warm-up, loss and
batch). The code is written the way the PyTorch tutorials write it: an eager ``nn.Module``, a
Python training loop, ``clip_grad_norm_``, an EMA updated under ``torch.no_grad()``, and a Python
loop over the 1000 DDPM steps for sampling. ``torch.compile`` of the model is an option
(``TorchTrainer(..., compile=True)``); eager is the reference.

The recipes (:data:`RECIPES`; the values are those of the jaxdiff experiments, which the test
checks):

- ``moons``: :class:`ConditionalMLP` (the 2-D tutorial's conditional-linear MLP, 128 units) on
  10^4 moons points; sigmoid schedule of 100 steps (1e-5 .. 0.1, ``experiments.toy2d``'s
  default); Adam 1e-3, batch 128, clipping at 1, EMA 0.9, antithetic timesteps; an epoch is a
  fresh ``torch.randperm`` cut into 78 full batches (the tutorial's loop, remainder dropped as in
  jaxdiff).
- ``digits``: :func:`improved_denoiser_8x8` (9.2M parameters) on sklearn's 1,797 8x8 digits in
  [0, 1]; linear schedule of 1000 steps; AdamW 2e-4, weight decay 0.01, batch 32, clipping at 1,
  EMA 0.995.
- ``mnist``: :func:`unet_compact` (``experiments.mnist``'s CPU-preset U-Net, base 16, 0.28M
  parameters) on 28x28x1 images; linear schedule of 1000 steps; Adam 1e-3 with 100 warm-up
  steps, batch 32, clipping at 1, EMA 0.995.

Data stay in memory on the training device and batches are gathered with a per-epoch
``randperm`` (jaxdiff likewise keeps the dataset on the device); a ``DataLoader`` with
per-example collation would only add overhead to the PyTorch side.

This module imports only torch, numpy and (for the data) scikit-learn: never jax.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RECIPES",
    "ConditionalLinear",
    "ConditionalMLP",
    "Recipe",
    "TorchSchedule",
    "TorchTrainer",
    "UNet",
    "build_model",
    "count_params",
    "ddpm_sample",
    "digits_images",
    "improved_denoiser_8x8",
    "load_jax_params",
    "make_betas",
    "moons_points",
    "random_images",
    "respaced_betas",
    "trailing_timesteps",
    "unet_compact",
]

# --------------------------------------------------------------------------------------------
# Schedules (NumPy, float64, stored as float32: as jaxdiff.schedules computes them)


def make_betas(
    kind: str, num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
    """``(T,)`` float64 betas of the ``"linear"`` or ``"sigmoid"`` schedule (jaxdiff's formulas)."""
    if kind == "linear":
        return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    if kind == "sigmoid":
        x = np.linspace(-6.0, 6.0, num_steps, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-x)) * (beta_end - beta_start) + beta_start
    raise ValueError(f"unknown schedule kind {kind!r}; the ports use 'linear' or 'sigmoid'")


def trailing_timesteps(num_steps: int, steps: int) -> np.ndarray:
    """The ``steps`` timesteps of a DDPM run, decreasing (jaxdiff's ``"trailing"`` spacing).

    ``steps == num_steps`` is the plain loop ``T-1, ..., 0``.
    """
    if not 1 <= steps <= num_steps:
        raise ValueError(f"steps must lie in [1, {num_steps}], got {steps}")
    if steps == num_steps:
        return np.arange(num_steps - 1, -1, -1, dtype=np.int64)
    i = np.arange(steps)
    return np.round(num_steps - i * (num_steps / steps)).astype(np.int64) - 1


def respaced_betas(betas: np.ndarray, timesteps: Sequence[int]) -> np.ndarray:
    """Betas of the schedule restricted to ``timesteps`` (Nichol & Dhariwal 2021, sec. 4)."""
    asc = np.sort(np.asarray(timesteps, np.int64))
    if len(asc) == len(betas):
        return np.asarray(betas, np.float64)
    log_abar = np.cumsum(np.log1p(-np.asarray(betas, np.float64)))[asc]
    return -np.expm1(log_abar - np.append(0.0, log_abar[:-1]))


class TorchSchedule:
    """The schedule terms the training loss and the DDPM step need, as float32 tensors."""

    def __init__(self, betas: np.ndarray, device: torch.device | str = "cpu"):
        b = np.asarray(betas, np.float64)
        alphas = 1.0 - b
        abar = np.cumprod(alphas)
        abar_prev = np.append(1.0, abar[:-1])
        one_minus = 1.0 - abar
        post_var = b * (1.0 - abar_prev) / one_minus
        clip_from = post_var[1] if len(b) > 1 else b[0]
        terms = dict(
            betas=b,
            sqrt_alphas_cumprod=np.sqrt(abar),
            sqrt_one_minus_alphas_cumprod=np.sqrt(one_minus),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / abar),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / abar - 1.0),
            posterior_log_variance_clipped=np.log(np.append(clip_from, post_var[1:])),
            posterior_mean_coef1=b * np.sqrt(abar_prev) / one_minus,
            posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(alphas) / one_minus,
        )
        self.num_steps = len(b)
        for name, value in terms.items():
            setattr(self, name, torch.tensor(value, dtype=torch.float32, device=device))


def _gather(a: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``a[t]`` shaped ``(B, 1, ..., 1)`` to broadcast against a batch of rank ``ndim``."""
    return a[t].reshape(-1, *([1] * (ndim - 1)))


# --------------------------------------------------------------------------------------------
# Models (mirrors of jaxdiff.models; module and attribute names are jaxdiff's so that
# load_jax_params can map parameter paths one to one)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """``[cos(t w_i), sin(t w_i)]`` with ``w_i = max_period ** (-i / (dim // 2))`` (jaxdiff's)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ConditionalLinear(nn.Module):
    """The 2-D tutorial's layer: ``nn.Linear`` scaled by a per-timestep embedding (U[0, 1))."""

    def __init__(self, num_in: int, num_out: int, num_steps: int):
        super().__init__()
        self.num_out = num_out
        self.lin = nn.Linear(num_in, num_out)
        self.embed = nn.Embedding(num_steps, num_out)
        self.embed.weight.data.uniform_()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.embed(t)


class ConditionalMLP(nn.Module):
    """Mirror of ``jaxdiff.models.ConditionalMLP``: 3 conditional linears + softplus, 1 linear."""

    def __init__(self, dim: int, num_steps: int, hidden: int = 128):
        super().__init__()
        self.lin1 = ConditionalLinear(dim, hidden, num_steps)
        self.lin2 = ConditionalLinear(hidden, hidden, num_steps)
        self.lin3 = ConditionalLinear(hidden, hidden, num_steps)
        self.lin4 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        h = F.softplus(self.lin1(x, t))
        h = F.softplus(self.lin2(h, t))
        h = F.softplus(self.lin3(h, t))
        return self.lin4(h)


# Flax's nnx.GroupNorm default epsilon (PyTorch's default is 1e-5).
GROUP_NORM_EPS = 1e-6


class ResBlock(nn.Module):
    """Mirror of ``jaxdiff.models.ResBlock`` (NCHW)."""

    def __init__(self, cin: int, cout: int, time_dim: int, *, norm_groups: int, dropout=0.0):
        super().__init__()
        self.dropout = dropout
        self.norm1 = nn.GroupNorm(norm_groups, cin, eps=GROUP_NORM_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, cout)
        self.norm2 = nn.GroupNorm(norm_groups, cout, eps=GROUP_NORM_EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]
        h = F.silu(self.norm2(h))
        if self.dropout > 0:  # jaxdiff skips dropout at rate 0
            h = F.dropout(h, self.dropout, self.training)
        h = self.conv2(h)
        return h + (x if self.skip is None else self.skip(x))


class AttentionBlock(nn.Module):
    """Mirror of ``jaxdiff.models.AttentionBlock``: GN, qkv Linear, SDPA, Linear, residual."""

    def __init__(self, channels: int, *, num_heads: int = 1, norm_groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(norm_groups, channels, eps=GROUP_NORM_EPS)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, d = self.num_heads, c // self.num_heads
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w).transpose(1, 2))  # (B, HW, 3C)
        q, k, v = (a.reshape(b, h * w, heads, d).transpose(1, 2) for a in qkv.chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d); scale 1/sqrt(d)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest resize to the skip's exact size, then a 3x3 conv.

    ``"nearest-exact"`` samples at pixel centres, as ``jax.image.resize(method="nearest")``
    does (plain ``"nearest"`` differs for odd sizes such as 4 -> 7).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest-exact"))


class _Level(nn.Module):
    def __init__(self, blocks, attns, resample, transition: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)
        self.resample = resample
        self.transition = transition


def _level_sizes(size: tuple[int, int], num_levels: int, downsample: bool):
    h, w = size
    sizes = [(h, w)]
    for _ in range(num_levels - 1):
        if downsample:
            h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes


class UNet(nn.Module):
    """Mirror of ``jaxdiff.models.UNet`` (same constructor arguments, NCHW tensors).

    The channel plan, the skip bookkeeping, the placement of attention and resampling are
    jaxdiff's line for line; only the layout differs (PyTorch's NCHW).
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int | Sequence[int] = 28,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (7,),
        *,
        mid_attention: bool = True,
        dropout: float = 0.0,
        num_classes: int | None = None,
        norm_groups: int = 32,
        num_heads: int = 1,
        downsample: bool = True,
    ):
        super().__init__()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        num_levels = len(channel_mults)
        sides = [min(s) for s in _level_sizes(size, num_levels, downsample)]
        attn_at = [side in tuple(attention_resolutions) for side in sides]
        chs = [base_channels * m for m in channel_mults]
        down_plan: list[list[tuple[int, int]]] = []
        skip_chs = [base_channels]
        ch = base_channels
        for i in range(num_levels):
            down_plan.append([])
            for _ in range(num_res_blocks):
                down_plan[i].append((ch, chs[i]))
                ch = chs[i]
                skip_chs.append(ch)
            if i != num_levels - 1:
                skip_chs.append(ch)
        mid_ch = ch
        up_plan: list[list[tuple[int, int]]] = []
        for i in reversed(range(num_levels)):
            up_plan.append([])
            for _ in range(num_res_blocks + 1):
                up_plan[-1].append((ch + skip_chs.pop(), chs[i]))
                ch = chs[i]

        self.base_channels = base_channels
        self.num_classes = num_classes
        time_dim = 4 * base_channels
        self.time_in = nn.Linear(base_channels, time_dim)
        self.time_out = nn.Linear(time_dim, time_dim)
        self.label_embed = nn.Embedding(num_classes + 1, time_dim) if num_classes else None
        self.conv_in = nn.Conv2d(channels, base_channels, 3, padding=1)

        def res(cin, cout):
            return ResBlock(cin, cout, time_dim, norm_groups=norm_groups, dropout=dropout)

        def attn(c):
            return AttentionBlock(c, num_heads=num_heads, norm_groups=norm_groups)

        down = []
        for i, blocks in enumerate(down_plan):
            last = i == num_levels - 1
            down.append(
                _Level(
                    [res(a, b) for a, b in blocks],
                    [attn(b) for _, b in blocks] if attn_at[i] else [],
                    Downsample(chs[i]) if downsample and not last else None,
                    transition=not last,
                )
            )
        self.down = nn.ModuleList(down)
        self.mid_block1 = res(mid_ch, mid_ch)
        self.mid_attn = attn(mid_ch) if mid_attention else None
        self.mid_block2 = res(mid_ch, mid_ch)
        up = []
        for k, blocks in enumerate(up_plan):
            i = num_levels - 1 - k
            up.append(
                _Level(
                    [res(a, b) for a, b in blocks],
                    [attn(b) for _, b in blocks] if attn_at[i] else [],
                    Upsample(chs[i]) if downsample and i != 0 else None,
                    transition=i != 0,
                )
            )
        self.up = nn.ModuleList(up)
        self.out_norm = nn.GroupNorm(norm_groups, ch, eps=GROUP_NORM_EPS)
        self.out_conv = nn.Conv2d(ch, channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)  # jaxdiff: zero-initialised output conv
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        temb = self.time_out(F.silu(self.time_in(timestep_embedding(t, self.base_channels))))
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.num_classes, device=x.device)
            temb = temb + self.label_embed(labels)
        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for j, block in enumerate(level.blocks):
                h = block(h, temb)
                if len(level.attns):
                    h = level.attns[j](h)
                hs.append(h)
            if level.transition:
                if level.resample is not None:
                    h = level.resample(h)
                hs.append(h)
        h = self.mid_block1(h, temb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid_block2(h, temb)
        for level in self.up:
            for j, block in enumerate(level.blocks):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(level.attns):
                    h = level.attns[j](h)
            if level.transition and level.resample is not None:
                h = level.resample(h, hs[-1].shape[2:])
        return self.out_conv(F.silu(self.out_norm(h)))


def unet_compact(channels: int = 1, image_size: int = 28, num_classes: int | None = None):
    """Mirror of ``experiments.mnist.unet_compact`` (base 16, mults (1, 2, 2), 8 groups)."""
    side = min(_level_sizes((image_size, image_size), 3, True)[-1])
    return UNet(
        channels,
        image_size,
        base_channels=16,
        channel_mults=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(side,),
        num_classes=num_classes,
        norm_groups=8,
    )


def unet_mnist(channels: int = 1, image_size: int = 28, num_classes: int | None = None):
    """Mirror of ``jaxdiff.models.unet_mnist`` (the GPU preset's "full" U-Net, dropout 0.1)."""
    side = min(_level_sizes((image_size, image_size), 3, True)[-1])
    return UNet(
        channels,
        image_size,
        base_channels=64,
        channel_mults=(1, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(side,),
        dropout=0.1,
        num_classes=num_classes,
        norm_groups=32,
    )


def improved_denoiser_8x8(channels: int = 1, image_size: int = 8, num_classes: int | None = None):
    """Mirror of ``jaxdiff.models.improved_denoiser_8x8`` (64/128/256 channels at 8x8)."""
    return UNet(
        channels,
        image_size,
        base_channels=64,
        channel_mults=(1, 2, 4),
        num_res_blocks=1,
        attention_resolutions=(),
        num_classes=num_classes,
        norm_groups=8,
        downsample=False,
    )


def load_jax_params(model: nn.Module, flat: Mapping[str, np.ndarray]) -> None:
    """Copy jaxdiff parameters into a port, in place.

    ``flat`` maps dotted jaxdiff parameter paths (``"down.0.blocks.0.conv1.kernel"``; e.g. from
    ``nnx.to_pure_dict(params)`` flattened) to arrays. Conv kernels HWIO -> OIHW, Linear
    kernels ``(in, out)`` -> ``(out, in)``, GroupNorm ``scale`` and Embed ``embedding`` ->
    ``weight``. Every parameter of ``model`` must be set exactly once (else ``ValueError``).
    """
    state = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    for path, value in flat.items():
        *mod, leaf = path.split(".")
        value = np.asarray(value, np.float32)
        if leaf == "kernel":
            if value.ndim == 4:
                value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            elif value.ndim == 2:
                value = value.T  # (in, out) -> (out, in)
            leaf = "weight"
        elif leaf in ("scale", "embedding"):
            leaf = "weight"
        name = ".".join([*mod, leaf])
        if name not in state:
            raise ValueError(f"jaxdiff parameter {path!r} has no counterpart {name!r}")
        if tuple(state[name].shape) != value.shape:
            raise ValueError(
                f"{path!r} -> {name!r}: shape {value.shape} != {tuple(state[name].shape)}"
            )
        new[name] = torch.tensor(value)
    missing = sorted(set(state) - set(new))
    if missing:
        raise ValueError(f"parameters of the port not set from jaxdiff: {missing}")
    model.load_state_dict(new, strict=True)


# --------------------------------------------------------------------------------------------
# Data (NumPy; identical to jaxdiff.data's, which the test checks)


def moons_points(n: int = 10_000, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """``(n, 2)`` float32 moons, ``jaxdiff.data.make_points("moons", n, seed=seed)``."""
    from sklearn.datasets import make_moons

    return np.ascontiguousarray(make_moons(n, noise=noise, random_state=seed)[0], np.float32)


def digits_images() -> np.ndarray:
    """``(1797, 8, 8, 1)`` float32 in [0, 1], ``jaxdiff.data.load_digits(scale="unit")[0]``."""
    from sklearn.datasets import load_digits

    return (np.asarray(load_digits().images, np.float32) / 16.0)[..., None]


def random_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """``(n, size, size, 1)`` float32 uniform in [-1, 1]: MNIST-shaped stand-in data (the step
    costs the same on any values)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(n, size, size, 1)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Recipes


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One tutorial recipe; the values mirror the jaxdiff experiment's defaults."""

    name: str
    model: str  # "conditional_mlp", "improved_denoiser_8x8", "unet_compact" or "unet_mnist"
    schedule: str
    num_steps: int
    beta_start: float
    beta_end: float
    optimizer: str  # "adam" or "adamw"
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    ema_decay: float
    batch_size: int
    antithetic: bool
    example_shape: tuple[int, ...]  # jaxdiff layout: (D,) or (H, W, C)


RECIPES: dict[str, Recipe] = {
    # experiments.toy2d defaults (beta_end 0.1 is its default; the tutorial's 5e-3 costs the same)
    "moons": Recipe(
        name="moons",
        model="conditional_mlp",
        schedule="sigmoid",
        num_steps=100,
        beta_start=1e-5,
        beta_end=0.1,
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0.0,
        warmup_steps=0,
        grad_clip=1.0,
        ema_decay=0.9,
        batch_size=128,
        antithetic=True,
        example_shape=(2,),
    ),
    # experiments.digits defaults
    "digits": Recipe(
        name="digits",
        model="improved_denoiser_8x8",
        schedule="linear",
        num_steps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        optimizer="adamw",
        learning_rate=2e-4,
        weight_decay=0.01,
        warmup_steps=0,
        grad_clip=1.0,
        ema_decay=0.995,
        batch_size=32,
        antithetic=False,
        example_shape=(8, 8, 1),
    ),
    # experiments.mnist, preset "cpu" as the tutorial recipe it started from: the preset itself
    # now trains with the cosine schedule and Min-SNR-5 weighting, which cost the same per step
    # (benchmarks/pytorch/time_to_fid.py compares the two recipes' quality)
    "mnist": Recipe(
        name="mnist",
        model="unet_compact",
        schedule="linear",
        num_steps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0.0,
        warmup_steps=100,
        grad_clip=1.0,
        ema_decay=0.995,
        batch_size=32,
        antithetic=False,
        example_shape=(28, 28, 1),
    ),
    # experiments.mnist, preset "gpu" (the "default MNIST U-Net at batch 128")
    "mnist_full": Recipe(
        name="mnist_full",
        model="unet_mnist",
        schedule="linear",
        num_steps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        optimizer="adam",
        learning_rate=2e-4,
        weight_decay=0.0,
        warmup_steps=1000,
        grad_clip=1.0,
        ema_decay=0.9999,
        batch_size=128,
        antithetic=False,
        example_shape=(28, 28, 1),
    ),
}


def build_model(recipe: Recipe) -> nn.Module:
    if recipe.model == "conditional_mlp":
        return ConditionalMLP(recipe.example_shape[0], recipe.num_steps, 128)
    if recipe.model == "improved_denoiser_8x8":
        return improved_denoiser_8x8(recipe.example_shape[-1], recipe.example_shape[0])
    if recipe.model == "unet_compact":
        return unet_compact(recipe.example_shape[-1], recipe.example_shape[0])
    if recipe.model == "unet_mnist":
        return unet_mnist(recipe.example_shape[-1], recipe.example_shape[0])
    raise ValueError(f"unknown model {recipe.model!r}")


class EMA:
    """Exponential moving average of the parameters, tutorial style (``torch.no_grad``).

    The decay has jaxdiff's warm-up: ``min(decay, (1 + step) / (10 + step))``.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        for name, p in model.named_parameters():
            self.shadow[name].mul_(d).add_(p.detach(), alpha=1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name])


def _autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op for ``None``."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


class TorchTrainer:
    """The recipe's training loop in eager PyTorch.

    Args:
      recipe: one of :data:`RECIPES`.
      data: the training set in jaxdiff's layout (``(N, D)`` points or ``(N, H, W, C)`` images);
        images are turned into NCHW once.
      device: ``"cpu"`` or ``"cuda"``.
      compile: wrap the model in ``torch.compile`` (the optimiser and EMA stay eager).
      batch_size: override the recipe's batch.
      seed: ``torch.manual_seed`` for the initialisation and the training noise.
      autocast: ``torch.bfloat16`` runs the model's forward (and so its backward) under
        ``torch.autocast`` (mixed precision: float32 parameters, optimiser and loss); ``None``
        computes in float32.
    """

    def __init__(
        self,
        recipe: Recipe,
        data: np.ndarray,
        device: str | torch.device = "cpu",
        *,
        compile: bool = False,
        batch_size: int | None = None,
        seed: int = 0,
        autocast: torch.dtype | None = None,
    ):
        torch.manual_seed(seed)
        self.recipe = recipe
        self.autocast = autocast
        self.device = torch.device(device)
        self.batch_size = batch_size or recipe.batch_size
        self.model = build_model(recipe).to(self.device)
        self.forward = torch.compile(self.model) if compile else self.model
        betas = make_betas(recipe.schedule, recipe.num_steps, recipe.beta_start, recipe.beta_end)
        self.schedule = TorchSchedule(betas, self.device)
        params = self.model.parameters()
        if recipe.optimizer == "adamw":
            self.opt = torch.optim.AdamW(
                params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay
            )
        else:
            self.opt = torch.optim.Adam(params, lr=recipe.learning_rate)
        warmup = recipe.warmup_steps
        self.lr_schedule = (
            torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warmup))
            if warmup > 0
            else None
        )
        self.ema = EMA(self.model, recipe.ema_decay)
        x = torch.as_tensor(data, dtype=torch.float32)
        if x.ndim == 4:
            x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
        self.data = x.contiguous().to(self.device)
        self.step_count = 0

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """L_simple (DDPM eq. 14), with antithetic timesteps when the recipe says so."""
        s, b, T = self.schedule, x0.shape[0], self.schedule.num_steps
        if self.recipe.antithetic:
            t = torch.randint(0, T, (b // 2 + 1,), device=x0.device)
            t = torch.cat([t, T - 1 - t])[:b]
        else:
            t = torch.randint(0, T, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = (
            _gather(s.sqrt_alphas_cumprod, t, x0.ndim) * x0
            + _gather(s.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise
        )
        with _autocast(self.device, self.autocast):
            pred = self.forward(x_t, t)
        return F.mse_loss(pred.float(), noise)

    def step(self, x0: torch.Tensor) -> torch.Tensor:
        """One optimiser step; returns the (detached) loss without synchronising."""
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(x0)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.opt.step()
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        self.ema.update(self.model, self.step_count)
        self.step_count += 1
        return loss.detach()

    def batches(self) -> Iterator[torch.Tensor]:
        """Endless full batches: a fresh ``randperm`` per epoch, the remainder dropped."""
        n, b = self.data.shape[0], self.batch_size
        while True:
            perm = torch.randperm(n, device=self.device)
            for i in range(n // b):
                yield self.data[perm[i * b : (i + 1) * b]]

    def train(self, num_steps: int, batches: Iterator[torch.Tensor] | None = None) -> torch.Tensor:
        """``num_steps`` steps of the tutorial loop; returns the last loss (not synchronised)."""
        batches = self.batches() if batches is None else batches
        loss = torch.zeros(())
        for _ in range(num_steps):
            loss = self.step(next(batches))
        return loss

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# --------------------------------------------------------------------------------------------
# DDPM sampling: a Python loop over the steps (DDPM Algorithm 2)


def ddpm_step(
    s: TorchSchedule,
    eps: torch.Tensor,
    x_t: torch.Tensor,
    index: int,
    noise: torch.Tensor,
    clip_x0: float | None = 1.0,
) -> torch.Tensor:
    """One ancestral step at schedule index ``index`` with the posterior variance, as
    ``jaxdiff.reverse.ddpm_step(..., variance="posterior", clip_x0=clip_x0)``."""
    if clip_x0 is None:
        coef = s.betas[index] / s.sqrt_one_minus_alphas_cumprod[index]
        mean = (x_t - coef * eps) / torch.sqrt(1.0 - s.betas[index])
    else:
        x0 = s.sqrt_recip_alphas_cumprod[index] * x_t - s.sqrt_recipm1_alphas_cumprod[index] * eps
        x0 = x0.clamp(-clip_x0, clip_x0)
        mean = s.posterior_mean_coef1[index] * x0 + s.posterior_mean_coef2[index] * x_t
    if index == 0:
        return mean
    return mean + torch.exp(0.5 * s.posterior_log_variance_clipped[index]) * noise


@torch.no_grad()
def ddpm_sample(
    model: nn.Module,
    betas: np.ndarray,
    shape: Sequence[int],
    *,
    steps: int | None = None,
    clip_x0: float | None = 1.0,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """DDPM ancestral sampling, one model call per step in a Python loop.

    ``steps=None`` (or T) is the full ``T-1 .. 0`` loop; fewer steps run DDPM on the respaced
    "trailing" grid, as ``jaxdiff.samplers.sample(solver="ddpm", steps=...)`` does (same cost
    per step). ``shape`` is NCHW. ``autocast=torch.bfloat16`` runs the model calls under
    ``torch.autocast`` (the update stays float32).
    """
    T = len(betas)
    ts = trailing_timesteps(T, T if steps is None else steps)
    s = TorchSchedule(respaced_betas(betas, ts), device)
    model.eval()
    x = torch.randn(*shape, device=device, generator=generator)
    n = len(ts)
    for i, t in enumerate(ts):
        tb = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
        with _autocast(device, autocast):
            eps = model(x, tb)
        eps = eps.float()
        noise = torch.randn(*shape, device=device, generator=generator)
        x = ddpm_step(s, eps, x, n - 1 - i, noise, clip_x0)
    return x
