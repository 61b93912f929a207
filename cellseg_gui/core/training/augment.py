"""Augmentations on batched tensors, on the device the model trains on.

Working on a whole (N, C, H, W) batch at once, on the training device, keeps data
preparation far cheaper than the forward/backward pass, so it never starves the model.
Every random draw goes through one ``torch.Generator`` so a seed reproduces a run
exactly on the CPU. Geometric transforms move image and class map together; the class
map is resampled with nearest-neighbour so it stays a valid map of class ids.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cellseg_gui.core.config import AugmentConfig

__all__ = ["Augmenter", "augment_batch"]


def _rand(n: int, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) draws made on the CPU generator, then moved: CPU generators keep
    runs reproducible whatever the training device."""
    return torch.rand(n, generator=gen).to(device)


def _flips_rot90(
    x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dihedral transforms per sample. Crops are square in training, so rot90 keeps the
    shape; non-square inputs skip the odd rotations."""
    n = x.shape[0]
    draws = torch.rand(n, 3, generator=gen)
    square = x.shape[-1] == x.shape[-2]
    xs, ys = [], []
    for i in range(n):
        xi, yi = x[i], y[i]
        if cfg.flips:
            if draws[i, 0] < 0.5:
                xi, yi = xi.flip(-1), yi.flip(-1)
            if draws[i, 1] < 0.5:
                xi, yi = xi.flip(-2), yi.flip(-2)
        if cfg.rot90:
            k = int(draws[i, 2] * 4) if square else 2 * int(draws[i, 2] * 2)
            if k:
                xi, yi = torch.rot90(xi, k, (-2, -1)), torch.rot90(yi, k, (-2, -1))
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def _geometric(
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AugmentConfig,
    gen: torch.Generator | None,
    *,
    max_rot_deg: float = 15.0,
    scale_range: tuple[float, float] = (0.85, 1.15),
    elastic_alpha: float = 0.03,
    elastic_grid: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Small rotation + scaling and/or elastic deformation as one sampling grid.

    ``elastic_alpha`` is the displacement in normalised coordinates (fraction of half the
    crop), drawn on a coarse grid and upsampled bicubically: smooth, cell-sized warps.
    Padding is reflection so no black corners teach the model about borders.
    """
    n, _, h, w = x.shape
    dev = x.device
    grid_dtype = torch.float32
    if cfg.affine:
        ang = (_rand(n, gen, dev) * 2 - 1) * math.radians(max_rot_deg)
        lo, hi = scale_range
        scale = lo + _rand(n, gen, dev) * (hi - lo)
        cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.zeros(n, 2, 3, device=dev, dtype=grid_dtype)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    else:
        theta = torch.eye(2, 3, device=dev, dtype=grid_dtype).expand(n, 2, 3)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if cfg.elastic:
        coarse = torch.randn(n, 2, elastic_grid, elastic_grid, generator=gen).to(dev)
        disp = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        grid = grid + elastic_alpha * disp.permute(0, 2, 3, 1)
    xo = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    yo = F.grid_sample(
        y[:, None].to(grid_dtype),
        grid,
        mode="nearest",
        padding_mode="reflection",
        align_corners=False,
    )[:, 0].to(y.dtype)
    return xo, yo


def _intensity(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast and gamma around the normalised range (about 0..1).

    Gamma applies to the clamped-positive part only so negative values (below the low
    percentile) never produce NaN.
    """
    n = x.shape[0]
    dev = x.device
    shape = (n,) + (1,) * (x.dim() - 1)
    r = torch.rand(n, 3, generator=gen).to(dev)
    brightness = ((r[:, 0] * 2 - 1) * 0.1).view(shape)
    contrast = (0.8 + r[:, 1] * 0.4).view(shape)
    gamma = torch.exp((r[:, 2] * 2 - 1) * math.log(1.3)).view(shape)
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    pos = x.clamp(min=0.0)
    return x - pos + pos.pow(gamma)


def _noise(x: torch.Tensor, gen: torch.Generator | None, max_sigma: float = 0.05) -> torch.Tensor:
    n = x.shape[0]
    sigma = (_rand(n, gen, x.device) * max_sigma).view(n, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    return x + sigma * noise


def _blur(x: torch.Tensor, gen: torch.Generator | None, max_sigma: float = 1.2) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (grouped conv: one call per axis)."""
    n, c, h, w = x.shape
    sigma = 0.1 + _rand(n, gen, x.device) * (max_sigma - 0.1)
    radius = int(math.ceil(3 * max_sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # (n, K)
    k = k.repeat_interleave(c, 0)  # one kernel per (sample, channel)
    xs = x.reshape(1, n * c, h, w)
    xs = F.pad(xs, (radius, radius, radius, radius), mode="reflect")
    xs = F.conv2d(xs, k[:, None, None, :], groups=n * c)
    xs = F.conv2d(xs, k[:, None, :, None], groups=n * c)
    return xs.reshape(n, c, h, w)


def augment_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AugmentConfig,
    gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch: ``x`` float (N, C, H, W), ``y`` integer class maps (N, H, W).

    Returns new tensors of the same shapes and dtypes, on the same device. Each
    augmentation is drawn per sample with probability 0.5 (flips, rot90 are uniform over
    their group), except the geometric warp and noise/blur strengths which are drawn
    continuously and include near-identity.
    """
    if cfg.flips or cfg.rot90:
        x, y = _flips_rot90(x, y, cfg, gen)
    if cfg.affine or cfg.elastic:
        x, y = _geometric(x, y, cfg, gen)
    if cfg.intensity:
        x = _intensity(x, gen)
    if cfg.blur:
        x = _blur(x, gen)
    if cfg.noise:
        x = _noise(x, gen)
    return x.contiguous(), y.contiguous()


class Augmenter:
    """Holds the config and the generator; ``enabled`` lets the fit loop skip the call."""

    def __init__(self, cfg: AugmentConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(int(seed))

    @property
    def enabled(self) -> bool:
        return any(bool(v) for v in self.cfg.to_dict().values())

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.enabled:
            return x, y
        return augment_batch(x, y, self.cfg, self.gen)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
