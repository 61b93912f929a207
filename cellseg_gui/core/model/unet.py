"""The U-Net: a small, CPU-friendly encoder-decoder with skip connections.

Design choices, and why:

- Each level is two conv3x3 (+ batch-norm) + ReLU; going down is a 2x2 max-pool, going up
  a 1x1 conv that halves the channels followed by bilinear 2x upsampling, then the skip is
  concatenated. Measured on a 2-core CPU (hidden 16, depth 4): 0.26 s per 512x512
  inference and 2.7 s per training step of 8x256x256, against 0.35 s / 3.5 s with a 2x2
  transposed conv and 0.45 s / 4.2 s with bilinear upsampling of the full-width features.
  Halving first means the upsampling and the next conv3x3 move half the data.
- Any input height and width: the input is reflect-padded (bottom and right, so the
  pooling grid stays anchored at the top-left corner and a crop starting there sees the
  same features as the whole image) up to a multiple of ``2**depth`` (times
  ``downsample``) inside ``forward`` and the logits are cropped back, so callers never
  have to think about sizes (tiles, odd crops, whole images). Inputs smaller than the padding
  needs fall back to replicate padding (reflect cannot pad more than the size).
- ``downsample`` N > 1: after the padding, the input is averaged over N x N blocks and
  the logits are upsampled bilinearly at the end, so the whole network runs at 1/N
  resolution (N^2 cheaper, N times the context). The padding multiple becomes
  ``2**depth * N``, which keeps a crop at the origin matching the whole image.
- Plain tensor ops only, so the model scripts (``torch.jit.script``), traces, and exports
  to ONNX with dynamic height and width.
- Dropout (spatial, ``Dropout2d``) sits on the bottleneck and decoder features, where the
  network combines context; dropping the first level's raw-intensity features mostly adds
  noise. It is inactive in eval mode, so exports are unaffected.
- Channels-last memory (NHWC): the conv weights are kept in it and ``forward`` puts its
  input in it and hands contiguous logits back, so callers never see it. Measured on the
  2-core CPU (hidden 16, depth 4, half resolution): a training step of 4 x 256 x 256 takes
  0.85x the time (median of six interleaved pairs, 0.81-0.88) and a 1024 x 1024 inference
  0.73x (0.78x a step under bf16 autocast); oneDNN's convolutions run natively in that
  layout. On CUDA it is the layout PyTorch recommends for mixed precision (not measured
  here: no GPU was lent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellseg_gui.core.config import ModelConfig

__all__ = ["UNet", "build_model", "model_from_state"]


class _Block(nn.Sequential):
    """conv3x3 -> [BN] -> ReLU, twice. The conv has no bias when BN follows it (BN's own
    shift makes it redundant and it costs a memory pass)."""

    def __init__(self, c_in: int, c_out: int, batchnorm: bool, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            layers.append(nn.Conv2d(c, c_out, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class _Up(nn.Module):
    """Halve the channels (1x1 conv), upsample 2x bilinearly, concatenate the skip, block."""

    def __init__(self, c_in: int, c_out: int, batchnorm: bool, dropout: float) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c_in, c_out, 1)
        self.block = _Block(2 * c_out, c_out, batchnorm, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """U-Net from a ``ModelConfig``: ``forward(x (N, C, H, W)) -> logits (N, K, H, W)``, with
    one plane more (the distance logit, ``core.model.distance``) when ``cfg.distance_head``,
    two more (5x the flows, ``core.model.flow``) when ``cfg.flow_head``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.depth < 0:
            raise ValueError(f"depth must be >= 0, got {cfg.depth}")
        if cfg.hidden < 1 or cfg.in_channels < 1 or cfg.n_classes < 1:
            raise ValueError(f"bad model sizes: {cfg}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
        if not 0 <= int(cfg.downsample) <= 8:
            raise ValueError(f"downsample must be 0 (auto) to 8, got {cfg.downsample}")
        if cfg.distance_head and cfg.flow_head:
            raise ValueError("a model has a distance output or flows, not both")
        if cfg.init not in ("kaiming", "xavier"):
            raise ValueError(f"init must be 'kaiming' or 'xavier', not {cfg.init!r}")
        self.cfg = cfg
        self.multiple = cfg.size_multiple
        self.downsample = cfg.scale
        widths = [cfg.hidden * 2**i for i in range(cfg.depth + 1)]
        bn = bool(cfg.batchnorm)
        self.down = nn.ModuleList()
        c_prev = cfg.in_channels
        for w in widths[:-1]:
            self.down.append(_Block(c_prev, w, bn))
            c_prev = w
        self.bottom = _Block(c_prev, widths[-1], bn, cfg.dropout)
        self.ups = nn.ModuleList(
            _Up(widths[i + 1], widths[i], bn, cfg.dropout) for i in reversed(range(cfg.depth))
        )
        self.head = nn.Conv2d(widths[0], cfg.n_outputs, 1)
        self._init_weights(cfg.init)
        self.to(memory_format=torch.channels_last)

    def _init_weights(self, init: str) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                if init == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        w = x.shape[3]
        m = self.multiple
        ph = (m - h % m) % m
        pw = (m - w % m) % m
        # Pad bottom/right only: the image stays anchored at the pooling grid's origin, so
        # a crop that starts at (0, 0) sees exactly the features the whole image does.
        pad = [0, pw, 0, ph]
        # Always pad (a zero pad is a no-op) so a traced/ONNX graph keeps the padding for
        # sizes other than the example's; only the tiny-input fallback is a branch.
        if ph < h and pw < w:
            x = F.pad(x, pad, mode="reflect")
        else:
            x = F.pad(x, pad, mode="replicate")
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        x = x.contiguous(memory_format=torch.channels_last)
        skips: list[torch.Tensor] = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for i, up in enumerate(self.ups):
            x = up(x, skips[len(skips) - 1 - i])
        x = self.head(x)
        if self.downsample > 1:
            x = F.interpolate(
                x, scale_factor=float(self.downsample), mode="bilinear", align_corners=False
            )
        return x[:, :, :h, :w].contiguous()


def build_model(cfg: ModelConfig) -> UNet:
    """A fresh, randomly initialised U-Net (seed torch first for repeatable weights)."""
    return UNet(cfg)


def model_from_state(
    cfg: ModelConfig, state: dict[str, torch.Tensor], device: torch.device | None = None
) -> UNet:
    """A U-Net with ``state``'s weights (copied into the built model, so channels-last
    whatever layout they were saved in), moved to ``device`` when given."""
    m = UNet(cfg)
    m.load_state_dict(state)
    return m if device is None else m.to(device)
