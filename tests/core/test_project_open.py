"""Opening a project: temporary files left by killed saves are cleaned up, and only ours;
a project file with a broken part opens with defaults for that part, says which key and
why, and is kept as .bak before it is first rewritten."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from cellseg_gui.core.data.maskwrite import write_mask
from cellseg_gui.core.data.project import open_project


def test_opening_removes_stale_temporaries_of_killed_saves_and_nothing_else(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    write_mask(tmp_path / "images" / "a.tif", np.zeros((8, 8), np.uint8))
    write_mask(tmp_path / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    stale = tmp_path / "masks" / ".a.png.k3j_x9Qz.tmp"  # what a killed save leaves
    fresh = tmp_path / "masks" / ".a.png.Ab12Cd34.tmp"  # another window saving right now
    stale_project = tmp_path / ".cellseg-project.json.zz99yy88.tmp"
    users = tmp_path / "masks" / ".notes.tmp"  # not ours
    for p in (stale, fresh, stale_project, users):
        p.write_bytes(b"half a file")
    old = time.time() - 3600
    for p in (stale, stale_project, users):
        os.utime(p, (old, old))
    project = open_project(tmp_path)
    assert "a" in project.pairs
    assert not stale.exists() and not stale_project.exists()
    assert fresh.exists() and users.exists()
    assert (tmp_path / "masks" / "a.png").exists()


def _folder(tmp_path: Path, project_text: str) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("a", "b"):
        write_mask(tmp_path / "images" / f"{name}.tif", np.zeros((8, 8), np.uint8))
    (tmp_path / "cellseg-project.json").write_text(project_text)
    return tmp_path


GOOD = {"split": "val", "verified": True}


@pytest.mark.parametrize(
    "broken, key, kept",
    [
        ({"classes": "abc"}, "classes", "images"),
        ({"classes": [{"name": "cell", "color": "red"}]}, "classes.0.color", "images"),
        ({"classes": [{"name": "cell", "color": [0, 300, 0]}]}, "classes.0.color.1", "images"),
        ({"settings": [1, 2]}, "settings", "images"),
        ({"images": ["a", "b"]}, "images", "classes"),
        ({"images": {"a": GOOD, "b": {"split": "test"}}}, "images.b.split", "images.a"),
        ({"models": {"m": 1}}, "models", "images"),
        ({"name": 7}, "name", "images"),
    ],
)
def test_a_broken_part_is_named_and_the_rest_opens(tmp_path, broken, key, kept) -> None:
    data = {
        "format": "cellseg-project", "version": 1,
        "classes": [{"name": "background", "color": [0, 0, 0]},
                    {"name": "nucleus", "color": [10, 20, 30]}],
        "images": {"a": GOOD}, "settings": {"mask_mode": "binary"}, "models": [],
    }  # fmt: skip
    data.update(broken)
    text = json.dumps(data)
    folder = _folder(tmp_path, text)
    project = open_project(folder)
    assert sorted(project.pairs) == ["a", "b"]
    assert len(project.problems) == 1, project.problems
    assert f"cellseg-project.json: {key}:" in project.problems[0]
    if kept == "images":
        assert project.get_split("a") == "val" and project.verified["a"]
    elif kept == "images.a":
        assert project.get_split("a") == "val" and project.get_split("b") == "train"
    else:
        assert project.classes[1]["name"] == "nucleus"
    assert (folder / "cellseg-project.json").read_text() == text  # untouched on open
    project.save()
    assert (folder / "cellseg-project.json.bak").read_text() == text  # kept before rewriting
    reopened = open_project(folder)
    assert reopened.problems == []


def test_a_future_version_and_a_split_naming_missing_files_are_said(tmp_path) -> None:
    data = {"format": "cellseg-project", "version": 3, "images": {"a": GOOD, "gone": GOOD},
            "layers": {"added": "later"}}  # fmt: skip
    project = open_project(_folder(tmp_path, json.dumps(data)))
    said = "\n".join(project.problems)
    assert "newer cellseg-gui (project version 3" in said
    assert "1 image(s) it names are not in the folder (gone)" in said
    project.save()
    saved = json.loads((tmp_path / "cellseg-project.json").read_text())
    assert saved["version"] == 3 and saved["layers"] == {"added": "later"}
    assert saved["images"]["gone"]["split"] == "val"  # kept in case the file comes back


def test_a_project_file_that_is_not_a_table_opens_with_defaults(tmp_path) -> None:
    project = open_project(_folder(tmp_path, "[1, 2, 3]"))
    assert sorted(project.pairs) == ["a", "b"] and "not a project table" in project.problems[0]


def test_symbolic_links_that_loop_or_point_nowhere_are_said(tmp_path, capsys) -> None:
    """They were skipped without a word."""
    from cellseg_gui.cli import main

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    write_mask(tmp_path / "images" / "a.tif", np.zeros((32, 32), np.uint8))
    write_mask(tmp_path / "masks" / "a.tif", np.zeros((32, 32), np.uint8))
    (tmp_path / "images" / "loop.tif").symlink_to("loop.tif")
    (tmp_path / "images" / "gone.png").symlink_to("/nowhere/gone.png")
    project = open_project(tmp_path)
    said = "\n".join(project.problems)
    assert "loop.tif: a symbolic link that loops or points nowhere" in said and "gone.png" in said
    assert sorted(project.pairs) == ["a"]
    main(["inspect", str(tmp_path)])
    err = capsys.readouterr().err
    assert "images/loop.tif: a symbolic link that loops or points nowhere; skipped" in err


def test_the_backup_of_a_broken_file_is_not_overwritten_by_later_saves(tmp_path) -> None:
    """A problem that survives a rewrite (an image the split names is missing) made the
    second save replace the .bak with the already-defaulted file."""
    data = {"format": "cellseg-project", "version": 1, "classes": "abc",
            "images": {"a": GOOD, "gone": GOOD}}  # fmt: skip
    text = json.dumps(data)
    folder = _folder(tmp_path, text)
    open_project(folder).save()
    reopened = open_project(folder)
    assert reopened.problems  # "gone" is still missing
    reopened.save()
    assert (folder / "cellseg-project.json.bak").read_text() == text


def test_settings_the_program_reads_are_checked(tmp_path) -> None:
    data = {"format": "cellseg-project", "version": 1,
            "settings": {"boundary_width": "x", "training": {"config": {"lr": 0.01}}}}  # fmt: skip
    project = open_project(_folder(tmp_path, json.dumps(data)))
    assert "settings.boundary_width:" in project.problems[0]
    assert project.boundary_width == 2  # the default, not a ValueError when a mask opens
