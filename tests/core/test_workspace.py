"""The Qt-free Workspace: it owns the open project, the image looked at and the latest
predictions, and announces each change to its subscribers, in order."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cellseg_gui.core.data.project import open_project
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


def test_documents_modified_marks_and_scores_are_held_and_announced(tmp_path) -> None:
    from cellseg_gui.core.editing.maskdoc import MaskDocument

    ws = Workspace()
    ws.open(_project(tmp_path))
    seen: list[Change] = []
    ws.subscribe(seen.append)
    doc = MaskDocument.empty(ws.new_mask_path("a"), (16, 16), "classes", 2)
    ws.add_document("a", doc)
    assert ws.document("a") is doc and ws.document("b") is None and ws.document(None) is None
    assert ws.project.pairs["a"].mask_path == doc.path  # the project lists the new mask
    ws.documents.clear()  # a copy
    assert ws.document("a") is doc
    ws.set_modified("a", True)
    ws.set_modified("a", True)  # no news when nothing changed
    assert ws.modified == {"a"}
    ws.set_scores("a", jaccard=0.5)
    ws.set_scores("a", ap50=0.25)  # keeps the Jaccard it had
    assert ws.scores("a").jaccard == 0.5 and ws.scores("a").ap50 == 0.25
    assert ws.scores("b").jaccard is None
    assert seen == [Change("mask", "a"), Change("modified", "a"), Change("scores", "a"),
                    Change("scores", "a")]  # fmt: skip
    ws.forget_documents()  # an open mask's mark goes with it
    assert ws.document("a") is None and ws.modified == frozenset()
    assert seen[-1] == Change("modified", "a")


def test_closing_is_announced_while_the_old_project_is_still_open(tmp_path) -> None:
    from cellseg_gui.core.editing.maskdoc import MaskDocument

    ws = Workspace()
    first = _project(tmp_path / "one")
    ws.open(first)
    ws.add_document("a", MaskDocument.empty(ws.new_mask_path("a"), (16, 16), "classes", 2))
    ws.set_scores("a", jaccard=0.9)
    during: list[tuple[str, object, int]] = []
    ws.subscribe(lambda ch: during.append((ch.kind, ws.project, len(ws.documents))))
    ws.open(_project(tmp_path / "two", ("c",)))
    # the closing news comes while the old project and its documents are still there
    assert during[0] == ("closing", first, 1)
    assert during[1][0] == "project" and during[1][2] == 0
    assert ws.scores("a").jaccard is None and ws.project.names == ["c"]
    ws.close()
    ws.close()  # nothing open: no news
    assert ws.project is None and [k for k, *_ in during] == ["closing", "project", "closing"]


def test_the_split_is_the_projects_one_function_and_is_announced(tmp_path) -> None:
    from cellseg_gui.core.data.project import ProjectError

    ws = Workspace()
    with pytest.raises(ValueError, match="no project"):
        ws.training_split(["a"], 0.5, 0)
    ws.open(_project(tmp_path, ("a", "b", "c")))
    seen: list[Change] = []
    ws.subscribe(seen.append)
    # a validation share of 0.9 with three images still leaves one to train on (the
    # window's own split used to put every image in validation)
    train, val = ws.training_split(["a", "b", "c"], 0.9, 0)
    assert train and val and sorted(train + val) == ["a", "b", "c"]
    assert seen == [Change("split")]
    assert open_project(tmp_path).split == ws.project.split  # stored in the project file
    assert ws.training_split(["a", "b", "c"], 0.9, 0) == (train, val)
    assert seen == [Change("split")]  # the same split again: no news
    ws.set_split(["a", "b", "c"], "val")
    assert seen[-1] == Change("split") and open_project(tmp_path).get_split("a") == "val"
    with pytest.raises(ProjectError):
        ws.training_split(["a", "b", "c"], 0.5, 0)


def test_a_split_drawn_in_a_folder_that_refuses_writes_is_still_announced(
    tmp_path, monkeypatch
) -> None:
    """The first Train in a read-only folder failed to store the split it drew; the list
    never showed it, even after a later run trained on it."""
    ws = Workspace()
    ws.open(_project(tmp_path, ("a", "b", "c")))
    seen: list[Change] = []
    ws.subscribe(seen.append)

    def refuse() -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(ws.project, "save", refuse)
    with pytest.raises(PermissionError):
        ws.training_split(["a", "b", "c"], 0.5, 0)
    assert seen == [Change("split")] and "val" in ws.project.split.values()


def test_the_model_registry_and_the_active_model(tmp_path) -> None:
    ws = Workspace()
    project = _project(tmp_path)
    ws.open(project)
    assert ws.models() == [] and ws.active_model is None
    seen: list[Change] = []
    ws.subscribe(seen.append)
    out = ws.new_model_path("run")
    assert out.parent == project.models_dir() and out.suffix == ".cellseg"
    from cellseg_gui.core.config import ModelConfig, NormConfig
    from cellseg_gui.core.model import bundle as B
    from cellseg_gui.core.model.unet import build_model

    cfg = ModelConfig(in_channels=1, n_classes=3, hidden=4, depth=2, downsample=1)
    meta = B.make_meta(cfg, mask_mode="instances", boundary_width=2, channels="grey",
                       norm=NormConfig(), training={}, metrics={}, name="m")  # fmt: skip
    B.save_bundle(out, build_model(cfg).eval(), meta)
    elsewhere = tmp_path / "elsewhere.cellseg"
    elsewhere.write_bytes(out.read_bytes())
    ws.add_model(elsewhere)
    assert ws.active_model == str(elsewhere) and seen == [Change("models")]
    assert {r.path for r in ws.models()} == {str(out), str(elsewhere)}
    elsewhere.unlink()  # a vanished active model is forgotten: the newest takes over
    assert [r.path for r in ws.models()] == [str(out)] and ws.active_model == str(out)
    ws.set_active_model(None)
    assert seen[-1] == Change("models")
    project.set_training_settings({"active_model": str(out)})
    ws.open(open_project(tmp_path))  # the saved active model comes back with the project
    assert ws.active_model == str(out)
