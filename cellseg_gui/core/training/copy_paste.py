"""Copy-paste augmentation: cells cut from the training images, pasted onto the background
of other crops.

Ten annotated images are what limits the validation figures (a model scores AP@0.5 0.77 on
its own training images and 0.65 on unseen ones), and the augmentations aimed at that gave
the largest gain measured. Pasting whole cells into new surroundings (Ghiasi et al.,
"Simple Copy-Paste", CVPR 2021, where it paid most with little data) shows the model each
cell beside other backgrounds and neighbours than the one it was drawn in.

A cell is pasted only where the crop is background around it (its footprint grown by
``MARGIN`` pixels), so no boundary class or neighbour's flows need redrawing. It brings
its halo (``HALO`` px of its own image around it, where that image was background: phase
contrast draws a bright rim that belongs to the cell), and its target pixels keep their
encoded extras (the flow potential and cell colour, ``sampling.CropSampler``), with the
class set to cell: its boundary class marked where it touched others, who stay behind.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

HALO = 3  # px of the cell's own image pasted around it
MARGIN = 2  # px of background kept between a pasted cell's halo and anything else
MAX_CELLS = 3  # pasted per crop: a uniform draw of 0..MAX_CELLS
TRIES = 4  # places tried per cell before it is given up


class CellBank:
    """Every cell of the training images that fits in a quarter of a crop, cut out with
    its halo, ready to paste (on the training device)."""

    def __init__(
        self,
        images: list[torch.Tensor],
        targets: list[torch.Tensor],
        cell_ids: list[np.ndarray],
        n_classes: int,
        crop: int,
        *,
        rim: bool = False,
        touching: bool = False,
        boundary_width: int = 3,
        colour_span: int = 0,
    ) -> None:
        """``rim``: the boundary class runs around every cell (``boundary_mode`` "all"),
        so a pasted cell keeps it; else it marks contacts, which stay behind.
        ``touching``: cells may be pasted against others (the boundary class of
        ``boundary_width`` is drawn where they meet, and with flows, ``colour_span`` the
        factor of the cell colour in the encoded targets, the pasted cell takes a colour
        its new neighbours do not have); else only onto background around them."""
        from cellseg_gui.core.lazy import ndimage as ndi

        self.k = int(n_classes)
        self.touching = bool(touching) and not rim
        self.bw = int(boundary_width)
        self.colour_span = int(colour_span)
        # (image, target, halo, cell, footprint) per cell
        self.patches: list[tuple[torch.Tensor, ...]] = []
        limit = max(8, int(crop) // 2)
        grow = np.ones((3, 3), bool)
        for img, tgt, ids in zip(images, targets, cell_ids, strict=True):
            ids = np.asarray(ids)
            h, w = ids.shape
            for label, box in enumerate(ndi.find_objects(ids), start=1):
                if box is None:
                    continue
                pad = HALO + MARGIN
                y0, y1 = max(box[0].start - pad, 0), min(box[0].stop + pad, h)
                x0, x1 = max(box[1].start - pad, 0), min(box[1].stop + pad, w)
                if y1 - y0 > limit or x1 - x0 > limit:
                    continue
                local = ids[y0:y1, x0:x1]
                cell = local == label
                halo = ndi.binary_dilation(cell, grow, iterations=HALO)
                footprint = ndi.binary_dilation(halo, grow, iterations=MARGIN)
                halo &= cell | (local == 0)  # the rim, not a neighbour's pixels
                t = tgt[y0:y1, x0:x1].clone()
                if not rim:  # class: cell, its old contacts' boundary left behind
                    t = torch.where(t % self.k != 0, t - t % self.k + 1, t)
                dev = tgt.device
                masks = (halo, np.ascontiguousarray(cell), footprint)
                self.patches.append(
                    (img[:, y0:y1, x0:x1].clone(), t, *(torch.from_numpy(m).to(dev) for m in masks))
                )

    def __len__(self) -> int:
        return len(self.patches)

    def paste(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Paste up to ``MAX_CELLS`` cells onto each crop's background, in place (the
        crops are the sampler's copies); returns x, y and how many cells went in."""
        if not self.patches:
            return x, y, 0
        n, _, h, w = x.shape
        pasted = 0
        for i in range(n):
            count = int(torch.randint(0, MAX_CELLS + 1, (1,), generator=gen))
            for _ in range(count):
                j = int(torch.randint(0, len(self.patches), (1,), generator=gen))
                turn = int(torch.randint(0, 8, (1,), generator=gen))
                img, tgt, halo, cell, foot = (_turn(a, turn) for a in self.patches[j])
                ph, pw = cell.shape[-2:]
                if ph > h or pw > w:
                    continue
                for _ in range(TRIES):
                    y0 = int(torch.randint(0, h - ph + 1, (1,), generator=gen))
                    x0 = int(torch.randint(0, w - pw + 1, (1,), generator=gen))
                    region = y[i, y0 : y0 + ph, x0 : x0 + pw]
                    taken = region % self.k != 0
                    if bool((taken & (cell if self.touching else foot)).any()):
                        continue
                    xr = x[i, :, y0 : y0 + ph, x0 : x0 + pw]
                    xr[:, halo & ~taken] = img[:, halo & ~taken]
                    if self.touching and bool(taken.any()):
                        self._against(region, tgt, cell, taken)
                    else:
                        region[cell] = tgt[cell]
                    pasted += 1
                    break
        return x, y, pasted

    def _against(
        self, region: torch.Tensor, tgt: torch.Tensor, cell: torch.Tensor, taken: torch.Tensor
    ) -> None:
        """Paste ``cell`` into ``region`` beside the cells already there (``taken``): a
        colour none of them has within reach, and the boundary class where they meet."""
        from cellseg_gui.core.model.flow import CELL_COLOURS, COLOUR_REACH

        values = tgt[cell]
        if self.colour_span:
            span = self.colour_span
            near = _grow(cell, COLOUR_REACH) & taken
            used = set(torch.div(region[near], span, rounding_mode="floor").tolist())
            own = int(values[0]) // span
            if own in used:
                free = [c for c in range(1, CELL_COLOURS) if c not in used]
                if not free:
                    return
                values = values + (free[0] - own) * span
        region[cell] = values
        meet = (cell & _grow(taken, self.bw)) | (taken & _grow(cell, self.bw))
        region[meet] = region[meet] - region[meet] % self.k + 2


def _grow(m: torch.Tensor, r: int) -> torch.Tensor:
    """``m`` grown by ``r`` pixels (a square), as bool."""
    f = m[None, None].float()
    return F.max_pool2d(f, 2 * r + 1, stride=1, padding=r)[0, 0] > 0


def _turn(a: torch.Tensor, k: int) -> torch.Tensor:
    """One of the eight flips and quarter turns of a patch (on its last two axes)."""
    if k & 4:
        a = a.flip(-1)
    return torch.rot90(a, k & 3, (-2, -1)) if k & 3 else a
