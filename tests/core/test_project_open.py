"""Opening a project: temporary files left by killed saves are cleaned up, and only ours."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from cellseg_gui.core.imageio import write_mask
from cellseg_gui.core.project import open_project


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
