"""``cellseg-gui --run ACTION``: start a job once the project is open; with --screenshot,
wait for it, raise the dock that shows its result and save the picture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph")

from cellseg_gui.core.config import TrainConfig  # noqa: E402
from cellseg_gui.core.data.project import open_project  # noqa: E402
from cellseg_gui.core.data.sample import make_sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
SMOOTH_BLUE = (52, 152, 219)  # the LR finder's smoothed curve
MARKER_RED = (231, 76, 60)  # its suggested-learning-rate line


def _home(tmp_path: Path, **config) -> Path:
    """A data home whose sample (what --sample opens) trains a tiny model quickly."""
    home = tmp_path / "home"
    project = open_project(make_sample(home / "sample"))
    cfg = TrainConfig()
    cfg.model.hidden, cfg.model.depth, cfg.crop, cfg.batch_size = 4, 2, 64, 2
    for key, value in config.items():
        setattr(cfg, key, value)
    project.set_training_settings({"config": cfg.to_dict()})
    return home


def _run(
    args: list[str], tmp_path: Path, home: Path | None = None, settings: str = "settings"
) -> subprocess.CompletedProcess:
    """Run the app; each ``settings`` folder starts with the default window layout."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CELLSEG_NO_WARMUP="1",
               CELLSEG_SETTINGS_DIR=str(tmp_path / settings),
               CELLSEG_DATA_HOME=str(home or tmp_path / "home"))  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "cellseg_gui", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _bottom_dock(png: Path) -> np.ndarray:
    """RGB pixels of the bottom dock area (below the canvas, above the dock tabs) of a
    screenshot taken with the default layout."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    h = rgb.shape[0]
    return rgb[int(0.75 * h) : int(0.93 * h)]


def _near(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 25) -> np.ndarray:
    return np.abs(rgb - np.array(colour)).max(axis=-1) <= tol


def test_lr_find_screenshot_shows_the_finished_sweep(tmp_path):
    home = _home(tmp_path)
    shot = tmp_path / "lr.png"
    out = _run(["--sample", "--run", "lr-find", "--screenshot", str(shot)], tmp_path, home)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "lr-find: suggested lr" in out.stdout
    assert shot.read_bytes()[:8] == PNG
    dock = _bottom_dock(shot)
    # The LR finder dock is on top of the tabified bottom docks and the sweep has ended:
    # its smoothed curve spans most of the width and the suggestion is a vertical dashed
    # line. (The empty Plots dock has these colours only in its short legend samples.)
    assert _near(dock, SMOOTH_BLUE).any(axis=0).sum() > 0.5 * dock.shape[1]
    assert _near(dock, MARKER_RED).sum(axis=0).max() > 30


def _coloured(rgb: np.ndarray, spread: int = 40) -> int:
    """Pixels that are neither grey nor white: the gallery's tinted thumbnails."""
    return int((rgb.max(axis=-1) - rgb.min(axis=-1) > spread).sum())


def test_train_then_predict_all_shows_the_gallery(tmp_path):
    home = _home(tmp_path, epochs=2, steps_per_epoch=4, patience=0)
    models = home / "sample" / "models"
    shot = tmp_path / "train.png"
    out = _run(["--sample", "--run", "train", "--screenshot", str(shot)], tmp_path, home)
    assert out.returncode == 0, out.stderr
    assert shot.read_bytes()[:8] == PNG
    assert list(models.glob("*.cellseg")), out.stdout

    shot = tmp_path / "gallery.png"
    args = ["--sample", "--run", "predict-all", "--screenshot", str(shot)]
    out = _run(args, tmp_path, home, settings="settings2")  # default layout, not the last one
    assert out.returncode == 0, out.stderr
    assert "predict-all: predicted 14 image(s)" in out.stdout
    # Thumbnails (grey images tinted by the difference colours) fill the bottom dock:
    # the Gallery was raised over the empty Plots and LR finder docks.
    assert _coloured(_bottom_dock(shot)) > 5000


def test_predict_all_without_a_model_says_so_and_exits_1(tmp_path):
    shot = tmp_path / "gallery.png"
    home = _home(tmp_path)
    out = _run(["--sample", "--run", "predict-all", "--screenshot", str(shot)], tmp_path, home)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    error = [line for line in lines if line.startswith("error:")]
    assert len(error) == 1 and "needs a model" in error[0] and "train" in error[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not shot.exists()


def test_run_without_a_project_exits_1_with_one_line(tmp_path):
    out = _run(["--run", "lr-find", "--screenshot", str(tmp_path / "x.png")], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error:") and "--sample" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = _run(["--run", "train", str(tmp_path / "missing")], tmp_path)
    assert out.returncode == 1
    assert "missing" in out.stderr and "Traceback" not in out.stderr


def test_a_failed_job_exits_1_with_its_message(tmp_path):
    from cellseg_gui.core.data.maskwrite import write_mask

    folder = tmp_path / "unlabelled"
    (folder / "images").mkdir(parents=True)
    write_mask(
        folder / "images" / "a.tif", (np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)
    )
    shot = tmp_path / "x.png"
    out = _run([str(folder), "--run", "lr-find", "--screenshot", str(shot)], tmp_path)
    assert out.returncode == 1
    error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "lr-find failed" in error[0] and "mask" in error[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not shot.exists()
