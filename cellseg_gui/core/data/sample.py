"""Deterministic synthetic live-cell sample (numpy + scipy only, no Qt, no torch).

Why: the README's first command (``cellseg-gui --sample``) must work without downloading
anything, and tests need a realistic-looking project. Nothing large ships in the wheel: the
images are generated on first use into the user's data folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellseg_gui.core.data.imageio import atomic_write_text
from cellseg_gui.core.data.maskwrite import write_mask

SIZE = 512
N_WITH_MASKS = 12
N_WITHOUT = 2
VERSION = 1


def data_home() -> Path:
    """Root of the app's user data (CELLSEG_DATA_HOME, else XDG_DATA_HOME/cellseg_gui)."""
    env = os.environ.get("CELLSEG_DATA_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "cellseg_gui"


def sample_dir() -> Path:
    return data_home() / "sample"


def _cells(rng: np.random.Generator, n: int) -> np.ndarray:
    """Instance map of ``n`` irregular cells, some touching (nearest-centre cut)."""
    inst = np.zeros((SIZE, SIZE), np.int32)
    dist = np.full((SIZE, SIZE), np.inf, np.float32)
    centres = rng.uniform(40, SIZE - 40, size=(n, 2))
    # Pull a few cells next to each other so some touch.
    for i in range(1, n, 4):
        centres[i] = centres[i - 1] + rng.uniform(-1, 1, 2) * 30
    for i, (cy, cx) in enumerate(centres, start=1):
        a, b = rng.uniform(14, 30), rng.uniform(10, 22)
        th, ph = rng.uniform(0, np.pi), rng.uniform(0, 6)
        y0, x0 = max(int(cy) - 40, 0), max(int(cx) - 40, 0)
        y1, x1 = min(int(cy) + 41, SIZE), min(int(cx) + 41, SIZE)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(th) + dy * np.sin(th)) / a
        v = (-dx * np.sin(th) + dy * np.cos(th)) / b
        ang = np.arctan2(v, u)
        wobble = 1 + 0.12 * np.sin(3 * ang + ph) + 0.06 * np.sin(5 * ang)
        r = np.sqrt(u * u + v * v) / wobble
        d = dist[y0:y1, x0:x1]
        inside = (r < 1) & (r < d)
        inst[y0:y1, x0:x1][inside] = i
        d[inside] = r[inside]
    return inst


def _render(rng: np.random.Generator, inst: np.ndarray) -> np.ndarray:
    """Phase-contrast-like image: dark cells with bright halos, texture, shading, noise."""
    fg = (inst > 0).astype(np.float32)
    body = ndi.gaussian_filter(fg, 1.5)
    halo = ndi.gaussian_filter(fg, 6) - ndi.gaussian_filter(fg, 2)
    texture = ndi.gaussian_filter(rng.normal(0, 1, inst.shape).astype(np.float32), 2) * fg
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32) / SIZE
    g = rng.uniform(-0.3, 0.3, 3)
    shading = 1 + g[0] * xx + g[1] * yy + g[2] * (xx - 0.5) ** 2
    img = (0.5 - 0.25 * body + 0.9 * halo + 0.06 * texture) * shading
    counts = rng.poisson(np.clip(img, 0, None) * 3000).astype(np.float32)
    img = 500 + counts + rng.normal(0, 25, inst.shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


def _hand_drawn(rng: np.random.Generator, inst: np.ndarray) -> np.ndarray:
    """Edges a person would draw: a pixel or two off, jittered along the contour."""
    out = np.zeros_like(inst)
    for i, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 4, 0), s.stop + 4) for s in sl)
        cell = inst[sl] == i
        op = rng.choice([ndi.binary_dilation, ndi.binary_erosion, None])
        if op is not None:
            cell = op(cell, iterations=int(rng.integers(1, 3)))
        shift = rng.integers(-1, 2, 2)
        cell = np.roll(cell, tuple(shift), axis=(0, 1))
        jitter = ndi.gaussian_filter(rng.normal(0, 1, cell.shape), 1.5) > 0.35
        edge = cell ^ ndi.binary_erosion(cell)
        cell = cell & ~(edge & jitter)
        cell = ndi.binary_fill_holes(cell)
        region = out[sl]
        region[cell & (region == 0)] = i
    return out


def make_sample(folder: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Path:
    """Write the sample project (images/, masks/, cellseg-project.json) into ``folder``.

    Deterministic for a given seed; returns the folder. Skips work when already written."""
    root = Path(folder) if folder is not None else sample_dir()
    stamp = root / ".sample-version"
    if stamp.exists() and stamp.read_text().strip() == str(VERSION):
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(N_WITH_MASKS + N_WITHOUT):
        name = f"cells_{k + 1:02d}"
        inst = _cells(rng, int(rng.integers(12, 26)))
        write_mask(root / "images" / f"{name}.tif", _render(rng, inst))
        if k < N_WITH_MASKS:
            write_mask(root / "masks" / f"{name}.png", _hand_drawn(rng, inst).astype(np.uint16))
    project = root / "cellseg-project.json"
    if not project.exists():
        meta = {"format": "cellseg-project", "version": 1, "name": "Sample (synthetic cells)"}
        atomic_write_text(project, json.dumps(meta, indent=1))
    stamp.write_text(str(VERSION))
    return root
