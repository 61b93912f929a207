"""The Qt-free Workspace: it owns the open project, the image looked at and the latest
predictions, and announces each change to its subscribers, in order."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cellseg_gui.core.project import open_project
from cellseg_gui.core.workspace import Change, Workspace


def _project(tmp_path, names=("a", "b")):
    (tmp_path / "images").mkdir(parents=True)
    for n in names:
        tifffile.imwrite(tmp_path / "images" / f"{n}.tif", np.zeros((16, 16), np.uint16))
    return open_project(tmp_path)


def test_changes_are_announced_and_opening_forgets_the_old_project(tmp_path) -> None:
    ws = Workspace()
    seen: list[Change] = []
    stop = ws.subscribe(seen.append)
    ws.open(_project(tmp_path))
    ws.set_current("a")
    labels = np.ones((16, 16), np.uint8)
    cells = np.zeros((16, 16), np.int64)
    cells[2:6, 2:6], cells[9:12, 9:12] = 1, 2
    ws.set_prediction("a", labels, None, cells)
    pred = ws.prediction("a")
    assert pred is not None and pred.n_cells == 2 and pred.cells.dtype == np.int32
    assert set(ws.predictions) == {"a"}
    ws.predictions.clear()  # a copy: the workspace's own is untouched
    assert ws.prediction("a") is not None
    ws.set_prediction("a", None)
    assert ws.prediction("a") is None
    assert seen == [
        Change("project"), Change("current", "a"), Change("prediction", "a"),
        Change("prediction", "a"),
    ]  # fmt: skip
    with pytest.raises(KeyError, match="zzz"):
        ws.set_current("zzz")
    ws.set_prediction("b", labels)
    ws.set_prediction("a", labels)
    ws.clear_predictions()
    assert ws.predictions == {} and seen[-2:] == [
        Change("prediction", "b"),
        Change("prediction", "a"),
    ]
    ws.set_prediction("b", labels)
    ws.open(_project(tmp_path / "other", ("c",)))
    assert ws.current is None and ws.predictions == {} and ws.project.names == ["c"]
    stop()
    ws.set_current("c")
    assert seen[-1] == Change("project")  # unsubscribed: no more news


def test_editing_asks_the_workspace_where_masks_go_and_what_to_paint(tmp_path) -> None:
    ws = Workspace()
    with pytest.raises(ValueError, match="no project"):
        ws.new_mask_path("a")
    assert ws.mask_mode == "auto" and ws.paint_classes()[0][0] == "background"
    project = _project(tmp_path, ("a", "b"))
    ws.open(project)
    assert ws.new_mask_path("a") == tmp_path / "masks" / "a.tif"  # no masks yet
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "masks" / "b_mask.tif", np.zeros((16, 16), np.uint8))
    ws.open(open_project(tmp_path))
    assert ws.mask_path("b") == tmp_path / "masks" / "b_mask.tif"
    assert ws.new_mask_path("a") == tmp_path / "masks" / "a_mask.tif"  # named like the others
    ws.register_mask("a", ws.new_mask_path("a"))
    assert ws.project.pairs["a"].mask_path == tmp_path / "masks" / "a_mask.tif"
    assert ws.image_shape("a") == (16, 16) and ws.image_shape("nope") is None
