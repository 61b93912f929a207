"""What a training step sees: the targets made from masks, random crops sliced from
images already on the device, and the resolution the masks allow."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.model.distance import DISTANCE_LEVELS, distance_levels
from cellseg_gui.core.model.flow import CELL_COLOURS, FLOW_LEVELS
from cellseg_gui.core.training.flow_target import cell_colours, flow_target
from cellseg_gui.core.training.separation import WEIGHT_LEVELS


class CropSampler:
    """Random crops from images held as tensors on the training device.

    Images smaller than the crop are reflect-padded once up front. Each epoch walks a
    fresh permutation of the images (so every training image is seen), and a share of
    crops (``foreground_bias``) is centred on a random foreground pixel so sparse
    images still teach the model what a cell looks like.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        targets: list[np.ndarray],
        crop: int,
        device: torch.device,
        foreground_bias: float,
        gen: torch.Generator,
        levels: list[np.ndarray] | None = None,
        n_classes: int = 0,
        distances: list[np.ndarray] | None = None,
        cell_ids: list[np.ndarray] | None = None,
    ) -> None:
        """``distances``: the distance output's target per image; with ``cell_ids`` they
        are instead the flow field's potential (``core.model.flow``), carried finely
        enough to take its gradient after augmentation, between pixels of one cell."""
        self.crop = int(crop)
        self.bias = float(foreground_bias)
        self.gen = gen
        self.images: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.fg: list[np.ndarray] = []
        self.offsets: list[tuple[int, int]] = []
        self.widths: list[int] = []  # original widths: foreground indices are flat in them
        # the per-pixel extras ride in the class map, so every geometric augmentation
        # moves them with the classes:
        # class + K * (weight level + w_span * (distance level + d_span * cell id))
        self.w_span = (WEIGHT_LEVELS + 1) if levels is not None else 1
        self.d_levels = DISTANCE_LEVELS
        if cell_ids is not None:
            # grid_sample moves the map as float32, exact below 2**24: as many levels as
            # that leaves (4096 with 3 classes, also with separation weights; 342 with
            # those when the ids rode modulo 1021)
            budget = 2**24 // (max(int(n_classes), 1) * self.w_span * CELL_COLOURS)
            self.d_levels = min(FLOW_LEVELS, budget)
            if self.d_levels < 64:
                raise ValueError("too many classes for flows with separation weights")
        self.d_span = self.d_levels
        for i, (img, tgt) in enumerate(zip(images, targets, strict=True)):
            h, w = tgt.shape
            self.widths.append(int(w))
            ph, pw = max(0, self.crop - h), max(0, self.crop - w)
            x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
            y = torch.from_numpy(np.ascontiguousarray(tgt, dtype=np.uint8)).long()
            if levels is not None:
                # separation weights ride in the class map (class + K * level), so every
                # geometric augmentation moves them with the classes; see split_weights
                y = y + int(n_classes) * torch.from_numpy(levels[i]).long()
            if distances is not None:
                dl = torch.from_numpy(distance_levels(distances[i], self.d_levels)).long()
                if cell_ids is not None:
                    # colours, not ids: neighbouring cells never share one, however many
                    dl = dl + self.d_span * torch.from_numpy(cell_colours(cell_ids[i]))
                y = y + int(n_classes) * self.w_span * dl
            if ph or pw:
                # reflect where the image is large enough, else repeat the edge
                mode = "reflect" if ph < h and pw < w else "replicate"
                x = F.pad(x[None], (0, pw, 0, ph), mode=mode)[0]
                y = F.pad(y, (0, pw, 0, ph), value=0)
            self.images.append(x.to(device))
            self.targets.append(y.to(device))
            self.fg.append(np.flatnonzero(np.asarray(tgt) > 0).astype(np.int64))
            self.offsets.append((int(y.shape[-2]), int(y.shape[-1])))
        self.weighted = levels is not None
        self.flow = cell_ids is not None
        self.distance = distances is not None and not self.flow
        self.n_classes = int(n_classes)

    def decode(
        self, y: torch.Tensor, w0: float
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Encoded crops -> (classes, per-pixel loss weights or None, distance target
        in [0, 1] or None, flow target (B, 2, H, W) unit vectors or None)."""
        dist = flow = None
        if self.distance or self.flow:
            span = self.n_classes * self.w_span
            dl = torch.div(y, span, rounding_mode="floor")
            y = y - dl * span
            if self.flow:
                cid = torch.div(dl, self.d_span, rounding_mode="floor")
                dl = dl - cid * self.d_span
                flow = flow_target(dl.float() / (self.d_levels - 1), cid)
            else:
                dist = dl.float() / (self.d_levels - 1)
        pixel_w = None
        if self.weighted:
            y, pixel_w = split_weights(y, self.n_classes, w0)
        return y, pixel_w, dist, flow

    def positions(self, idx: int) -> tuple[int, int]:
        h, w = self.offsets[idx]
        c = self.crop
        fg = self.fg[idx]
        r = torch.rand(3, generator=self.gen)
        if len(fg) and float(r[0]) < self.bias:
            p = int(fg[int(r[1] * len(fg)) % len(fg)])
            cy, cx = divmod(p, self.widths[idx])
            y0 = min(max(0, cy - c // 2), h - c)
            x0 = min(max(0, cx - c // 2), w - c)
        else:
            y0 = int(r[1] * (h - c + 1))
            x0 = int(r[2] * (w - c + 1))
        return y0, x0

    def batch(self, order: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[tuple]]:
        """Crops for the given image indices: x (B, C, c, c), y (B, c, c) long, boxes."""
        c = self.crop
        xs, ys, boxes = [], [], []
        for i in order:
            y0, x0 = self.positions(i)
            xs.append(self.images[i][:, y0 : y0 + c, x0 : x0 + c])
            ys.append(self.targets[i][y0 : y0 + c, x0 : x0 + c])
            boxes.append((i, y0, x0))
        return torch.stack(xs), torch.stack(ys), boxes


# An automatic epoch trains on at least this many times the pixels it then validates, so
# validation stays under a tenth of the epoch: a validated pixel (its forward pass, the
# loss and the AP) costs about half a trained one (forward and backward, augmentation),
# 0.25 s against 0.51 s a megapixel on usiigaci with 2 threads. With one pass over the
# training pixels, its 5 validation images beside 10 training ones took 19% of each epoch
# (1.2 s of 6.5 s); at 4 times them, 10.7%.
TRAIN_PER_VAL_PIXEL = 5


def _steps_per_epoch(
    cfg: TrainConfig, samples: list, world: int, val_samples: list | None = None
) -> int:
    """Steps in one epoch (on each of ``world`` processes): ``cfg.steps_per_epoch``, or
    about one pass over the training pixels, or more when the validation images
    (``val_samples``, not the training ones) would otherwise take over a tenth of it."""
    if cfg.steps_per_epoch:
        total = int(cfg.steps_per_epoch)
    else:
        pixels = sum(int(s.target.size) for s in samples)
        if val_samples is not None and val_samples is not samples:
            pixels = max(pixels, TRAIN_PER_VAL_PIXEL * sum(int(s.target.size) for s in val_samples))
        total = max(1, round(pixels / (cfg.crop * cfg.crop * cfg.batch_size)))
    return max(1, math.ceil(total / world))


def min_image_side(cfg: TrainConfig) -> int:
    """The smallest image side this network learns from: one cell of its coarsest level
    (2**depth, times the downsampling; auto counts as 2, the larger choice). A 1x1 image
    made batch-norm raise in the check and validated as J 0.0000 in training."""
    ds = int(cfg.model.downsample or 2)
    return 2 ** int(cfg.model.depth) * max(ds, 1)


def _check_samples(samples: list, cfg: TrainConfig) -> tuple[list, str]:
    """The samples training can use; too-small images are refused by name (ValueError when
    none is left)."""
    if not samples:
        raise ValueError("no images to train on")
    for s in samples:
        if s.target is None:
            raise ValueError(f"{s.name}: no mask (training needs a mask for every image)")
    small, text = too_small(samples, cfg)
    if small:
        if len(small) == len(samples):
            raise ValueError(text.replace("are left out", "and no other image remains"))
        return [s for s in samples if s not in small], text
    return samples, ""


def too_small(samples: list, cfg: TrainConfig) -> tuple[list, str]:
    """The samples smaller than this network learns from (``min_image_side``), and the
    line that names them (the first five, with their sizes); ("", []) when none is."""
    side = min_image_side(cfg)
    small = [s for s in samples if min(s.image.shape[-2:]) < side]
    if not small:
        return [], ""
    shown = ", ".join(f"{s.name} ({s.image.shape[-1]}x{s.image.shape[-2]})" for s in small[:5])
    return small, (
        f"{len(small)} image(s) smaller than {side} pixels on a side, the least this "
        f"network (depth {cfg.model.depth}) learns from, are left out: {shown}"
    )


def training_targets(samples: list, cfg: TrainConfig) -> list:
    """The samples with the class maps this run trains on: with ``boundary_mode``
    "touching", instance masks get their boundary class only where cells touch."""
    if cfg.boundary_mode not in ("all", "touching"):
        raise ValueError(f"boundary_mode must be 'all' or 'touching', not {cfg.boundary_mode!r}")
    from dataclasses import replace

    from cellseg_gui.core.data.masks import instances_to_classes

    touching = cfg.boundary_mode == "touching"
    # rebuilt from the cell ids with this run's width too: a resumed run keeps its own
    return [
        replace(
            s,
            target=instances_to_classes(s.instances, cfg.boundary_width, touching_only=touching),
        )
        if s.instances is not None and s.mask_mode == "instances"
        else s
        for s in samples
    ]


def distance_possible(samples: list) -> bool:
    """A distance output is learned from cell ids: every training mask must hold them."""
    return bool(samples) and all(
        s.instances is not None and s.mask_mode == "instances" for s in samples
    )


def _make_sampler(samples, crop, device, bias, gen, cfg=None, n_classes=0) -> CropSampler:
    levels = None
    if cfg is not None and cfg.separation_weight > 0:
        if all(s.instances is not None and s.mask_mode == "instances" for s in samples):
            from cellseg_gui.core.training.separation import separation_weights, weight_levels

            levels = [
                weight_levels(
                    separation_weights(s.instances, cfg.separation_weight, cfg.separation_sigma),
                    cfg.separation_weight,
                )
                for s in samples
            ]
    distances = None
    cell_ids = None
    if cfg is not None and (cfg.model.distance_head or cfg.model.flow_head):
        from cellseg_gui.core.model.distance import distance_target
        from cellseg_gui.core.model.flow import FLOW_EDGE_WEIGHT

        flow = bool(cfg.model.flow_head)
        weight = FLOW_EDGE_WEIGHT if flow else 0.0
        distances = [distance_target(s.instances, weight) for s in samples]
        cell_ids = [s.instances for s in samples] if flow else None
    return CropSampler(
        [x.image for x in samples], [x.target for x in samples], crop, device, bias, gen,
        levels=levels, n_classes=n_classes, distances=distances, cell_ids=cell_ids,
    )  # fmt: skip


def split_weights(y: torch.Tensor, n_classes: int, w0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded targets (class + K * level) -> (classes, per-pixel loss weights)."""
    level = torch.div(y, n_classes, rounding_mode="floor")
    return y - level * n_classes, 1.0 + level.float() * (w0 / WEIGHT_LEVELS)


# A class whose pixels lie within 2 px of another class more often than this is too thin
# to survive a 2x2 average. Measured: EM membranes 0.5-0.6, dsb2018 nuclei 0.29, usiigaci
# phase-contrast cells 0.13-0.33 per image, about 0.2 over a set.
THIN_SHARE = 0.25


def edge_counts(target: np.ndarray, mask_mode: str = "") -> dict[int, tuple[int, int]]:
    """Per class: (pixels within 2 px of another class, all its pixels); image borders do
    not count as edges. Instance masks count as cell vs background: their boundary class
    is derived and thin by construction."""
    from cellseg_gui.core.lazy import ndimage as ndi

    t = np.asarray(target)
    if mask_mode == "instances":
        t = (t > 0).astype(np.uint8)
    out: dict[int, tuple[int, int]] = {}
    for c in np.unique(t):
        m = t == c
        core = ndi.binary_erosion(m, iterations=2, border_value=1)
        total = int(np.count_nonzero(m))
        out[int(c)] = (total - int(np.count_nonzero(core)), total)
    return out


def choose_downsample(samples: list) -> int:
    """``downsample`` for ``ModelConfig.downsample = 0`` (auto): 2 when every class,
    over all training masks together, has at most THIN_SHARE of its pixels near an edge,
    else 1. On usiigaci phase contrast 2 gave validation Jaccard 0.635 against 0.602 at
    full resolution in the same 10 minutes on one CPU thread (3.6x the steps)."""
    near: dict[int, int] = {}
    total: dict[int, int] = {}
    with_masks = [s for s in samples if s.target is not None]
    step = max(1, len(with_masks) // 16)  # 16 images tell; a large set need not be read
    for s in with_masks[::step]:
        for c, (n, t) in edge_counts(s.target, str(getattr(s, "mask_mode", "") or "")).items():
            near[c] = near.get(c, 0) + n
            total[c] = total.get(c, 0) + t
    if not total:
        return 1
    worst = max(near[c] / total[c] for c in total)
    return 2 if worst <= THIN_SHARE else 1


def _downsample_message(ds: int) -> str:
    if ds > 1:
        return (
            f"downsample {ds}: the objects in the masks are large, so the network works at "
            f"1/{ds} resolution (about {ds * ds}x faster); set it to 1 for finer edges"
        )
    return "downsample 1: some structures in the masks are thin, so full resolution"
