"""The open project and what the program knows of it now, without Qt.

A :class:`Workspace` owns the open :class:`~cellseg_gui.core.project.Project`, the image
being looked at and each image's latest prediction, and announces every change to the
callbacks that subscribed (a :class:`Change` each). The window subscribes and redraws its
list and canvas from it, so code that predicts (a training run, Predict all, a test) sets
a prediction here and never pushes pixels into widgets by hand.

It also answers what editing asks of the project (mask mode, where a new mask goes, an
image's size, the classes to paint). First steps of issue 17's Workspace: the open mask
documents, the split and the model registry still live in the editor and the project.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellseg_gui.core.palette import PALETTE as DEFAULT_PALETTE
from cellseg_gui.core.project import Project

__all__ = ["Change", "ShownPrediction", "Workspace"]


@dataclass(frozen=True)
class ShownPrediction:
    """One image's latest prediction."""

    labels: np.ndarray  # uint8 class map
    probability: np.ndarray | None  # float16 probability of the chosen class
    cells: np.ndarray | None  # int32 cell ids from the model's post-processing

    @property
    def n_cells(self) -> int:
        return 0 if self.cells is None else int(self.cells.max(initial=0))


@dataclass(frozen=True)
class Change:
    """What changed: ``"project"`` (another project is open; ``name`` None), ``"current"``
    (the image looked at is ``name``) or ``"prediction"`` (``name``'s prediction was set
    or removed)."""

    kind: str
    name: str | None = None


class Workspace:
    def __init__(self) -> None:
        self.project: Project | None = None
        self.current: str | None = None
        self._predictions: dict[str, ShownPrediction] = {}
        self._listeners: list[Callable[[Change], None]] = []

    # ------------------------------------------------------------------ observers
    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` after every change; returns the unsubscribe call."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _announce(self, change: Change) -> None:
        for callback in list(self._listeners):
            callback(change)

    # ------------------------------------------------------------------ state
    def open(self, project: Project) -> None:
        """Make ``project`` the open one: no image looked at, no predictions yet."""
        self.project = project
        self.current = None
        self._predictions.clear()
        self._announce(Change("project"))

    def set_current(self, name: str | None) -> None:
        if self.project is not None and name is not None and name not in self.project.pairs:
            raise KeyError(f"{name!r} is not an image of {self.project.name}")
        self.current = name
        self._announce(Change("current", name))

    @property
    def predictions(self) -> dict[str, ShownPrediction]:
        """Each image's latest prediction (a copy: change it through set_prediction)."""
        return dict(self._predictions)

    def prediction(self, name: str | None) -> ShownPrediction | None:
        return None if name is None else self._predictions.get(name)

    def set_prediction(
        self,
        name: str,
        labels: np.ndarray | None,
        probability: np.ndarray | None = None,
        cells: np.ndarray | None = None,
    ) -> None:
        """The latest prediction of ``name`` (None removes it): class map, probability
        of the chosen class and, from the model's post-processing, its cells."""
        if labels is None:
            self._predictions.pop(name, None)
        else:
            self._predictions[name] = ShownPrediction(
                np.asarray(labels, np.uint8),
                probability,
                None if cells is None else np.asarray(cells, np.int32),
            )
        self._announce(Change("prediction", name))

    def clear_predictions(self) -> None:
        """Forget every prediction (each removal announced, so every row redraws)."""
        for name in list(self._predictions):
            self.set_prediction(name, None)

    # ------------------------------------------------------------------ what editing asks
    @property
    def mask_mode(self) -> str:
        """The project's mask mode ("binary", "classes", "instances"), or "auto"."""
        mode = self.project.mask_mode if self.project is not None else "auto"
        return mode if mode in ("binary", "classes", "instances") else "auto"

    @property
    def boundary_width(self) -> int:
        return self.project.boundary_width if self.project is not None else 2

    def image_path(self, name: str) -> Path | None:
        p = self.project
        return p.image_path(name) if p is not None and name in p.pairs else None

    def mask_path(self, name: str) -> Path | None:
        """The mask file of ``name``, or None when the image has none yet."""
        return self.project.mask_path(name) if self.project is not None else None

    def new_mask_path(self, name: str) -> Path:
        """Where a new mask goes: beside the project's other masks, named and typed like
        them (``masks/NAME.tif``, or ``NAME_mask.png`` in a flat folder), else
        ``masks/NAME.tif``."""
        p = self.project
        if p is None:
            raise ValueError("no project is open")
        for pair in p.pairs.values():
            mp = pair.mask_path
            if mp is None:
                continue
            suffix = mp.suffix.lower() if mp.suffix.lower() in (".tif", ".tiff", ".png") else ".tif"
            tail = mp.stem[len(pair.name) :] if mp.stem.startswith(pair.name) else ""
            return mp.parent / f"{name}{tail}{suffix}"
        return p.folder / "masks" / f"{name}.tif"

    def register_mask(self, name: str, path: Path) -> None:
        """``name`` has a mask now, so training and the list see it."""
        pair = self.project.pairs.get(name) if self.project is not None else None
        if pair is not None and pair.mask_path is None:
            pair.mask_path = path

    def image_shape(self, name: str) -> tuple[int, int] | None:
        """Height and width of ``name`` from its file's header (no pixels read)."""
        path = self.image_path(name)
        if path is None:
            return None
        from cellseg_gui.core.imageio import image_info

        shape = image_info(path)["shape"]
        return int(shape[0]), int(shape[1])

    def paint_classes(self) -> list[tuple[str, tuple[int, ...]]]:
        """The classes a brush can paint, with their colours: the project's, else
        background and cell for instance masks, else three numbered classes."""
        classes = self.project.classes if self.project is not None else []
        out = [
            (str(c.get("name", i)), tuple(c.get("color", DEFAULT_PALETTE[i % 9])))
            for i, c in enumerate(classes)
            if isinstance(c, dict)
        ]
        if out:
            return out
        if self.mask_mode == "instances":
            return [("background", DEFAULT_PALETTE[0]), ("cell", DEFAULT_PALETTE[1])]
        return [(("background" if i == 0 else f"class {i}"), DEFAULT_PALETTE[i]) for i in range(3)]
