"""The open project and what the program knows of it now, without Qt.

A :class:`Workspace` owns the open :class:`~cellseg_gui.core.data.project.Project`, the image
being looked at and each image's latest prediction, and announces every change to the
callbacks that subscribed (a :class:`Change` each). The window subscribes and redraws its
list and canvas from it, so code that predicts (a training run, Predict all, a test) sets
a prediction here and never pushes pixels into widgets by hand.

It also holds the open mask documents (the edits not yet saved live in them) and which
of them differ from their file, each image's validation scores, the train/val split (one
function: ``Project.training_split``, the CLI's too) and the model registry with the
active model, and answers what editing asks of the project (mask mode, where a new mask
goes, an image's size, the classes to paint). Saving, undo and the crash journal are the
editor's (app/editing.py, app/mask_saving.py); what a stroke paints is
``core/editing/edit_session.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cellseg_gui.core.data.project import Project
from cellseg_gui.core.palette import PALETTE as DEFAULT_PALETTE

if TYPE_CHECKING:  # the registry reads bundles: imported when the models are listed, so
    # the window's first paint does not wait for it
    from cellseg_gui.core.editing.maskdoc import MaskDocument
    from cellseg_gui.core.model.model_registry import ModelRecord

__all__ = ["Change", "Scores", "ShownPrediction", "Workspace"]


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
class Scores:
    """One validation image's figures from the latest run or prediction."""

    jaccard: float | None = None  # foreground Jaccard
    ap50: float | None = None  # AP at IoU 0.5 of the predicted cells


@dataclass(frozen=True)
class Change:
    """What changed, ``name`` being the image concerned (None: the whole project):

    - ``"closing"``: the open project is about to be replaced (save what is yours now:
      its documents, lock and folder are still the old project's);
    - ``"project"``: another project is open;
    - ``"current"``: the image looked at is ``name``;
    - ``"prediction"``: ``name``'s prediction was set or removed;
    - ``"mask"``: ``name``'s mask document was opened (show its class map);
    - ``"modified"``: ``name``'s mask now does (or no longer does) differ from its file;
    - ``"scores"``: ``name``'s validation scores were set;
    - ``"split"``: the train/val roles of the images changed;
    - ``"models"``: the model registry or the active model changed.
    """

    kind: str
    name: str | None = None


class Workspace:
    def __init__(self) -> None:
        self.project: Project | None = None
        self.current: str | None = None
        # whether this program holds the project's lock (one window per project keeps
        # the crash journals); the window that takes the lock sets it
        self.holds_lock = True
        self.active_model: str | None = None
        self._predictions: dict[str, ShownPrediction] = {}
        self._documents: dict[str, MaskDocument] = {}
        self._modified: set[str] = set()
        self._scores: dict[str, Scores] = {}
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
    def close(self) -> None:
        """Announce ``"closing"`` (subscribers save their edits while the project is still
        open), then forget the project and everything known of it."""
        if self.project is None:
            return
        self._announce(Change("closing"))
        self.project = None
        self.current = None
        self.active_model = None
        self._predictions.clear()
        self._documents.clear()
        self._modified.clear()
        self._scores.clear()

    def open(self, project: Project) -> None:
        """Make ``project`` the open one (closing the last): no image looked at, no
        documents, predictions or scores yet; its saved active model if it still exists."""
        self.close()
        self.project = project
        saved = project.training_settings().get("active_model")
        self.active_model = saved if isinstance(saved, str) and Path(saved).exists() else None
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
                _frozen(labels, np.uint8),
                probability,
                None if cells is None else _frozen(cells, np.int32),
            )
        self._announce(Change("prediction", name))

    def clear_predictions(self) -> None:
        """Forget every prediction (each removal announced, so every row redraws)."""
        for name in list(self._predictions):
            self.set_prediction(name, None)

    # ------------------------------------------------------------------ mask documents
    @property
    def documents(self) -> dict[str, MaskDocument]:
        """The open mask documents by image (a copy: add one through add_document)."""
        return dict(self._documents)

    def document(self, name: str | None) -> MaskDocument | None:
        return None if name is None else self._documents.get(name)

    def add_document(self, name: str, doc: MaskDocument) -> None:
        """``name``'s mask is open for editing: its class map is what to show, and the
        project lists the file as the image's mask (a new one included)."""
        self._documents[name] = doc
        self.register_mask(name, doc.path)
        self._announce(Change("mask", name))

    def forget_documents(self) -> None:
        """Close every document (their edits saved or given up by the caller)."""
        self._documents.clear()
        for name in sorted(self._modified):
            self.set_modified(name, False)

    def set_modified(self, name: str, modified: bool) -> None:
        """Whether ``name``'s mask holds edits its file does not."""
        if modified == (name in self._modified):
            return
        (self._modified.add if modified else self._modified.discard)(name)
        self._announce(Change("modified", name))

    @property
    def modified(self) -> frozenset[str]:
        """The images whose masks differ from their files."""
        return frozenset(self._modified)

    # ------------------------------------------------------------------ validation scores
    def set_scores(
        self, name: str, *, jaccard: float | None = None, ap50: float | None = None
    ) -> None:
        """``name``'s validation figures; a figure left None keeps the one known."""
        old = self._scores.get(name, Scores())
        self._scores[name] = Scores(
            old.jaccard if jaccard is None else float(jaccard),
            old.ap50 if ap50 is None else float(ap50),
        )
        self._announce(Change("scores", name))

    def scores(self, name: str) -> Scores:
        return self._scores.get(name, Scores())

    # ------------------------------------------------------------------ the split
    def training_split(
        self, names: list[str], val_fraction: float, seed: int
    ) -> tuple[list[str], list[str]]:
        """Train and validation names among ``names``: the project's stored split, drawn
        and stored the first time (``Project.training_split``, the CLI's function too).
        Raises ProjectError when every image is marked 'val', OSError when the project
        file cannot be written."""
        if self.project is None:
            raise ValueError("no project is open")
        before = dict(self.project.split)
        try:
            return self.project.training_split(names, val_fraction, seed)
        finally:  # a split drawn but not stored (a read-only folder) is still this one's
            if self.project.split != before:
                self._announce(Change("split"))

    def set_split(self, names: list[str], role: str) -> None:
        """Mark images 'train', 'val' or 'excluded' and store it (OSError if it cannot be
        written: the roles are set here all the same)."""
        if self.project is None:
            return
        self.project.set_split(dict.fromkeys(names, role))
        self._announce(Change("split"))
        self.project.save()

    # ------------------------------------------------------------------ models
    def models(self) -> list[ModelRecord]:
        """The project's readable models, newest first, with the active one listed even
        when it lives elsewhere; an active model that can no longer be read is forgotten
        (the newest becomes active, if any)."""
        from cellseg_gui.core.model.bundle_meta import BundleError
        from cellseg_gui.core.model.model_registry import model_record, model_records

        records = model_records(self.project) if self.project is not None else []
        if self.active_model and not any(r.path == self.active_model for r in records):
            try:
                records.insert(0, model_record(self.active_model))
            except (BundleError, OSError):  # a vanished or broken file: forget it
                self.active_model = None
        if self.active_model is None and records:
            self.active_model = records[0].path
        return records

    def set_active_model(self, path: str | None) -> None:
        self.active_model = None if path is None else str(path)
        self._announce(Change("models"))

    def add_model(self, path: str | Path, *, activate: bool = True) -> None:
        """List a bundle in the project (a new run's, or one loaded from disk)."""
        from cellseg_gui.core.model.model_registry import register_model

        if self.project is not None:
            register_model(self.project, path)
        if activate:
            self.active_model = str(path)
        self._announce(Change("models"))

    def new_model_path(self, kind: str) -> Path:
        """Where a new run's bundle goes (OSError when the folder is not writable)."""
        if self.project is None:
            raise ValueError("no project is open")
        from cellseg_gui.core.model.model_registry import new_model_path

        return new_model_path(self.project, kind)

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
        from cellseg_gui.core.data.imageio import image_info

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


def _frozen(values: np.ndarray, dtype: type) -> np.ndarray:
    """A read-only copy: the list's figures are worked out from a prediction on another
    thread (``app.rescoring``), so an in-place write must fail loudly, not race."""
    out = np.array(values, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out
