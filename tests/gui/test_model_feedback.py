"""What the window says about a model: each image's role for the active model in the
list, and a status-bar line naming the model and its validation figures when it is loaded."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from cellseg_gui.core.data.fileio import file_sha256  # noqa: E402
from cellseg_gui.core.data.maskwrite import write_mask  # noqa: E402


def _project(folder: Path, names: list[str]) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, name in enumerate(names):
        img = np.full((40, 50), 10 + i, np.uint8)
        write_mask(folder / "images" / f"{name}.tif", img)
        write_mask(folder / "masks" / f"{name}.tif", (img > 0).astype(np.uint8))
    return folder


def _bundle(
    path: Path, images: list[dict], *, jaccard: float, ap50: float, per_image: dict | None = None
) -> Path:
    """A bundle's record as training writes it (nothing here reads its weights)."""
    from cellseg_gui.core.config import ModelConfig, NormConfig
    from cellseg_gui.core.model.bundle_meta import make_meta

    split = {r: [i["name"] for i in images if i["split"] == r] for r in ("train", "val")}
    meta = make_meta(
        ModelConfig(hidden=4, depth=2, downsample=1), mask_mode="instances", boundary_width=2,
        channels="grey", norm=NormConfig(), name=path.stem,
        training={"images": images, "split": split,
                  **({"per_image_val_jaccard": per_image} if per_image else {})},
        metrics={"val_fg_jaccard": jaccard, "val_ap50": ap50},
    )  # fmt: skip
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("cellseg.json", json.dumps(meta))
    return path


@pytest.fixture
def win(qtbot, monkeypatch, tmp_path: Path):
    from cellseg_gui.app.main_window import MainWindow

    monkeypatch.setenv("CELLSEG_NO_WARMUP", "1")
    monkeypatch.setenv("CELLSEG_SETTINGS_DIR", str(tmp_path / "settings"))
    folder = _project(tmp_path / "p", ["a", "b", "c", "d"])
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    assert w.open_project(folder)
    yield w
    w.editor.shutdown()
    w.training.shutdown()
    w.close()


def _roles(w) -> dict[str, str]:
    m = w.image_list.model_
    return {e.name: m.state_text(e).split("\n")[0] for e in m.entries}


def test_the_list_says_what_each_image_was_to_the_loaded_model(win, tmp_path: Path) -> None:
    """The project marks every image "train" (as it does until someone sets a split), the
    model validated on b and c: the list must say so, and "unseen" for an image it never
    saw, or whose file is not the one it saw."""
    folder = win.project.folder
    win.workspace.set_split(["a", "b", "c", "d"], "train")
    sha = {n: file_sha256(folder / "images" / f"{n}.tif") for n in "abc"}
    images = [
        {"name": "a", "sha256": sha["a"], "split": "train"},
        {"name": "b", "sha256": sha["b"], "split": "val"},
        {"name": "c", "sha256": "0" * 64, "split": "val"},  # another file under this name
    ]
    model = _bundle(tmp_path / "m2.cellseg", images, jaccard=0.637, ap50=0.559)
    assert _roles(win) == dict.fromkeys("abcd", "GT · train")  # no model yet: the project's
    win.training.load_model(str(model))
    assert _roles(win) == {
        "a": "GT · train",
        "b": "GT · val",
        "c": "GT · unseen",
        "d": "GT · unseen",
    }
    m = win.image_list.model_
    tip = m.data(m.index(m.row_of("b")), Qt.ItemDataRole.ToolTipRole)
    assert "validation image of the active model" in tip
    # marking a for the next run's validation keeps the model's role and adds the plan
    win.workspace.set_split(["a"], "val")
    assert _roles(win)["a"] == "GT · train · next run: val"


def _gated_hashing(monkeypatch):
    """Past ``AT_ONCE_BYTES`` (set to nothing) every check runs on the thread; each file's
    hash waits for ``gate``; ``hashed`` lists the files hashed."""
    import threading

    from cellseg_gui.app import role_check
    from cellseg_gui.core.model import image_roles

    monkeypatch.setattr(role_check, "AT_ONCE_BYTES", 0)
    monkeypatch.setattr(image_roles, "_SHA_CACHE", {})
    gate, hashed, real = threading.Event(), [], image_roles.file_sha256

    def slow(path):
        gate.wait(5)
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(image_roles, "file_sha256", slow)
    return gate, hashed


def _recording(win, sha: dict, roles: dict[str, str], tmp_path: Path, name: str) -> str:
    images = [{"name": n, "sha256": sha[n], "split": r} for n, r in roles.items()]
    return str(_bundle(tmp_path / f"{name}.cellseg", images, jaccard=0.6, ap50=0.5))


def test_many_images_to_hash_are_checked_while_the_window_goes_on(
    qtbot, win, tmp_path: Path, monkeypatch
) -> None:
    """Hashing a thousand large images would freeze the window for seconds when a model
    is chosen: past ``AT_ONCE_BYTES`` the hashes are taken on a thread, the list shows
    the project's split meanwhile (not the previous model's roles), a note in the status
    bar says why, and the model's roles arrive when they are ready. A check overtaken by
    another model's is dropped; the last model's roles show."""
    folder = win.project.folder
    win.workspace.set_split(["a", "b", "c", "d"], "train")
    sha = {n: file_sha256(folder / "images" / f"{n}.tif") for n in "abcd"}
    first = _recording(win, sha, {"a": "train", "b": "val"}, tmp_path, "first")
    win.training.load_model(first)  # at once: nothing to wait for yet
    assert _roles(win)["b"] == "GT · val" and not win.role_check.busy
    gate, hashed = _gated_hashing(monkeypatch)
    win.training.load_model(_recording(win, sha, {"a": "val", "b": "train"}, tmp_path, "m2"))
    assert win.role_check.busy
    assert _roles(win) == dict.fromkeys("abcd", "GT · train")  # the project's, meanwhile
    assert win.role_note.isVisible()
    assert "Checking which of the 4 images the model was trained on" in win.role_note.text()
    assert win.statusBar().currentMessage().startswith("Loaded model m2: validation")
    win.training.load_model(_recording(win, sha, {"c": "val", "d": "train"}, tmp_path, "m3"))
    gate.set()
    qtbot.waitUntil(lambda: _roles(win)["c"] == "GT · val", timeout=5000)
    assert _roles(win) == {"a": "GT · unseen", "b": "GT · unseen", "c": "GT · val",
                           "d": "GT · train"}  # fmt: skip
    assert not win.role_check.busy and not win.role_note.isVisible()


def test_closing_or_switching_project_stops_the_hashing_after_one_file(
    qtbot, win, tmp_path: Path, monkeypatch
) -> None:
    """Future.cancel() cannot stop a started check, and closing the window waited for
    every file left to hash: the check stops between two files, so opening another
    project or closing waits for one file at most, and no role reaches the new list."""
    import threading
    import time

    folder = win.project.folder
    sha = {n: file_sha256(folder / "images" / f"{n}.tif") for n in "abcd"}
    gate, hashed = _gated_hashing(monkeypatch)
    every = {"a": "val", "b": "val", "c": "val", "d": "val"}
    win.training.load_model(_recording(win, sha, every, tmp_path, "m"))
    assert win.role_check.busy
    threading.Timer(0.3, gate.set).start()  # the first file's hash is under way
    other = _project(tmp_path / "q", ["a", "b"])
    assert win.open_project(other)
    assert not win.role_check.busy and not win.role_note.isVisible()
    qtbot.wait(500)
    assert len(hashed) <= 1  # stopped after the file under way, of four
    assert _roles(win)["a"] == "GT · train"  # the new project's split, no stale role
    # closing while a check waits on a file returns once that file is done
    gate.clear()
    win.training.load_model(_recording(win, sha, every, tmp_path, "m4"))
    if win.role_check.busy:
        threading.Timer(0.3, gate.set).start()
        t0 = time.perf_counter()
        win.close()
        assert time.perf_counter() - t0 < 3.0
    assert not [t for t in threading.enumerate() if t.name.startswith("roles")]


def test_a_model_that_records_no_images_leaves_the_projects_split(win, tmp_path: Path) -> None:
    win.workspace.set_split(["b"], "val")
    model = _bundle(tmp_path / "old.cellseg", [], jaccard=0.5, ap50=0.4)
    win.training.load_model(str(model))
    assert _roles(win) == {"a": "GT · train", "b": "GT · val", "c": "GT · train",
                           "d": "GT · train"}  # fmt: skip


def test_the_roles_follow_a_model_found_in_the_projects_folder(qtbot, monkeypatch, tmp_path):
    """A project whose models/ holds a bundle makes it active on opening (the newest):
    the list shows its roles from the start."""
    from cellseg_gui.app.main_window import MainWindow

    monkeypatch.setenv("CELLSEG_NO_WARMUP", "1")
    monkeypatch.setenv("CELLSEG_SETTINGS_DIR", str(tmp_path / "settings"))
    folder = _project(tmp_path / "p", ["a", "b"])
    (folder / "models").mkdir()
    images = [{"name": "b", "sha256": file_sha256(folder / "images" / "b.tif"), "split": "val"}]
    _bundle(folder / "models" / "run.cellseg", images, jaccard=0.5, ap50=0.4)
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_project(folder)
    assert w.training.active_model
    assert _roles(w) == {"a": "GT · unseen", "b": "GT · val"}
    w.editor.shutdown()
    w.training.shutdown()
    w.close()


def test_loading_a_model_names_it_and_its_validation_figures(win, tmp_path: Path) -> None:
    """Loading a model said nothing at all: the status bar names it and what it reached."""
    images = [
        {"name": n, "sha256": "", "split": r}
        for n, r in zip("abcd", ["train", "train", "val", "val"], strict=True)
    ]
    model = _bundle(tmp_path / "m2.cellseg", images, jaccard=0.637, ap50=0.559,
                    per_image={"c": 0.7, "d": 0.56})  # fmt: skip
    win.training.load_model(str(model))
    msg = win.statusBar().currentMessage()
    assert msg == (  # the mean is the figure `cellseg evaluate` ends on
        "Loaded model m2: validation foreground Jaccard 0.6370 (pooled over pixels; 0.6300 "
        "mean over images), "
        "cell AP@0.5 0.5590 (mean over images, with its post-processing) on 2 validation image(s)"
    )
    other = _bundle(tmp_path / "m3.cellseg", images, jaccard=0.7, ap50=0.6)
    win.training.load_model(str(other))
    win.training.set_active_model(str(model))  # choosing one in the Models list says so too
    assert win.statusBar().currentMessage().startswith("Active model m2: validation")
