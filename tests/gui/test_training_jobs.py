"""The training helper's own jobs against the real core: batch prediction with per-image
Jaccard, export with a model card, split kept in the project, settings persisted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellseg_gui.app import training_jobs as J
from cellseg_gui.core.data.dataset import ImagePair as Pair  # the project's own pairs
from cellseg_gui.core.jobs import CancelToken


@pytest.fixture
def tiny_bundle(tmp_path):
    import torch

    from cellseg_gui.core.config import ModelConfig, NormConfig
    from cellseg_gui.core.model.bundle import make_meta, save_bundle
    from cellseg_gui.core.model.unet import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(hidden=4, depth=2, n_classes=3)
    meta = make_meta(cfg, mask_mode="instances", boundary_width=2, channels="grey", norm=NormConfig(),
                     training={"settings": {"crop": 64, "lr": 0.003, "augment": {"flips": True}},
                               "split": {"train": ["a"], "val": ["b"]}},
                     metrics={"best_val_fg_jaccard": 0.42}, name="tiny")  # fmt: skip
    path = tmp_path / "models" / "tiny.cellseg"
    path.parent.mkdir()
    save_bundle(path, build_model(cfg).eval(), meta)
    return path


@pytest.fixture
def pairs(tmp_path):
    from cellseg_gui.core.data.maskwrite import write_mask

    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        img = (rng.random((48, 40)) * 255).astype(np.uint8)
        inst = np.zeros((48, 40), np.int32)
        inst[5:20, 5:20] = 1
        inst[25:40, 20:35] = 2
        ip, mp = tmp_path / f"im{i}.tif", tmp_path / f"im{i}_mask.tif"
        write_mask(ip, img)  # any integer image writes fine as a TIFF
        write_mask(mp, inst)
        out.append(Pair(f"im{i}", ip, mp if i < 2 else None))
    return out


def test_predict_job_yields_labels_and_jaccard(tiny_bundle, pairs):
    events = list(J.predict_job(tiny_bundle, pairs, CancelToken(), tile=64)())
    preds = [e for e in events if type(e).__name__ == "Predicted"]
    assert [p.name for p in preds] == ["im0", "im1", "im2"]
    assert all(p.error is None and p.labels.shape == (48, 40) for p in preds)
    assert preds[0].jaccard is not None and 0 <= preds[0].jaccard <= 1
    assert preds[2].jaccard is None  # no mask
    assert events[-1].reason == "done"
    # the gallery's thumbnail comes with the event: the GUI thread read the image and the
    # mask from disk again for every predicted image
    thumb = preds[0].thumbnail
    assert thumb is not None and thumb.dtype == np.uint8 and thumb.shape[2] == 3
    assert preds[2].thumbnail is None


def test_predict_job_reports_a_bad_image_and_goes_on(tiny_bundle, pairs, tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    events = list(J.predict_job(tiny_bundle, [Pair("bad", bad, None), pairs[0]], CancelToken())())
    preds = [e for e in events if type(e).__name__ == "Predicted"]
    assert preds[0].error and preds[1].error is None


def test_export_job_writes_checked_files_and_a_model_card(tiny_bundle, pairs, tmp_path):
    import onnxruntime  # noqa: F401 - a test dependency: missing, the test fails

    paths = {"bundle": tmp_path / "e" / "m.cellseg", "torchscript": tmp_path / "e" / "m.pt",
             "onnx": tmp_path / "e" / "m.onnx", "card": tmp_path / "e" / "m.md"}  # fmt: skip
    events = list(J.export_job(tiny_bundle, paths)())
    assert events[-1].reason == "done", events[-1]
    assert all(p.is_file() for p in paths.values())
    card = paths["card"].read_text()
    assert (
        "# Model card: tiny" in card
        and "validation foreground Jaccard (pooled over pixels): 0.4200" in card
        and "m.onnx" in card
    )
    from cellseg_gui.core.model.bundle import load_predictor

    for key in ("bundle", "torchscript", "onnx"):
        assert load_predictor(paths[key]).predict(np.zeros((32, 32), np.float32)).labels.shape == (
            32,
            32,
        )


def _project(folder: Path, n: int = 3):
    """A real project on a real folder of n tiny images with masks."""
    from cellseg_gui.core.data.project import open_project

    return open_project(_cells_folder(folder, seed=0, n=n))


def test_split_is_made_once_and_kept(tmp_path):
    from cellseg_gui.core.data.project import open_project

    p = _project(tmp_path / "d", n=10)
    names = p.names
    train, val = p.training_split(names, 0.2, seed=0)
    assert len(val) == 2 and set(train) | set(val) == set(names)
    reopened = open_project(p.folder)  # the split is in the project file
    again = reopened.training_split(names + ["new"], 0.5, seed=1)
    assert again[1] == val and "new" in again[0]  # same validation images, new one trains


@pytest.mark.parametrize("n", [2, 3, 4])
def test_a_large_validation_share_still_leaves_an_image_to_train_on(tmp_path, n):
    """The window's split and the CLI's are one function: with 2-4 images and a share of
    0.9 the window once put every image in validation, and training then failed."""
    from cellseg_gui.core.data.split import split_train_val

    p = _project(tmp_path / "d", n=n)
    train, val = p.training_split(p.names, 0.9, seed=0)
    assert (train, val) == split_train_val(p.names, 0.9, 0)
    assert train and val


def test_every_image_marked_val_is_refused_with_a_sentence(tmp_path):
    from cellseg_gui.core.data.project import ProjectError

    p = _project(tmp_path / "d")
    p.set_split({n: "val" for n in p.names})
    with pytest.raises(ProjectError, match="mark at least one as 'train'"):
        p.training_split(p.names, 0.2, seed=0)


def test_settings_and_models_records(tmp_path, tiny_bundle):
    from cellseg_gui.core.data.project import open_project
    from cellseg_gui.core.model.model_registry import model_records

    p = _project(tmp_path / "d")
    p.models_dir().mkdir()
    (p.models_dir() / tiny_bundle.name).write_bytes(tiny_bundle.read_bytes())
    p.set_training_settings({"config": {"lr": 0.01}, "active_model": str(tiny_bundle)})
    assert open_project(p.folder).training_settings()["config"]["lr"] == 0.01
    recs = model_records(p)
    assert recs[0].name == "tiny" and recs[0].best_val == pytest.approx(0.42)
    assert J.rank_losses({"a": 1.0, "b": 1.1, "c": 0.9, "d": 9.0})[0] == ("d", 9.0, True)


def test_export_job_writes_a_bioimageio_package(tiny_bundle, tmp_path):
    import zipfile

    import onnxruntime  # noqa: F401 - a test dependency: missing, the test fails

    from cellseg_gui.widgets.export_dialog import SUFFIXES

    target = tmp_path / f"m{SUFFIXES['bioimageio']}"
    events = list(J.export_job(tiny_bundle, {"bioimageio": target})())
    assert events[-1].reason == "done", events[-1]
    assert "rdf.yaml" in zipfile.ZipFile(target).namelist()


def test_window_prediction_gives_the_cells_and_scores_the_cli_gives(
    tiny_bundle, pairs, tmp_path, capsys
):
    """The window's batch prediction and `cellseg predict --instances` / `evaluate` use
    one path: the same cells, the same AP for the same image and model."""
    import json

    from cellseg_gui.cli import main
    from cellseg_gui.core.data.imageio import read_mask
    from cellseg_gui.core.model.bundle import load_bundle, save_bundle

    b = load_bundle(tiny_bundle, "cpu")
    pp = {"marker_threshold": 0.6, "min_size": 2, "chosen": "tuned on 1 validation image(s)"}
    model = tmp_path / "pp.cellseg"
    save_bundle(model, b.model, dict(b.meta, postprocess=pp))
    events = list(J.predict_job(model, pairs[:1], CancelToken(), tile=512)())
    pred = next(e for e in events if type(e).__name__ == "Predicted")
    assert main(["predict", str(model), str(pairs[0].image_path), "--out", str(tmp_path / "o"),
                 "--instances"]) == 0  # fmt: skip
    cli_cells = read_mask(tmp_path / "o" / "im0.tif")
    assert pred.cells.max() > 0 and np.array_equal(pred.cells, cli_cells)
    data = tmp_path / "d"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "images" / "im0.tif").write_bytes(pairs[0].image_path.read_bytes())
    (data / "masks" / "im0.tif").write_bytes(pairs[0].mask_path.read_bytes())
    capsys.readouterr()
    assert main(["evaluate", str(model), str(data), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ap_mean_over_images"]["0.5"] == pytest.approx(pred.ap50)
    assert d["fg_jaccard_mean_over_images"] == pytest.approx(pred.jaccard)


def _cells_folder(data: Path, seed: int, n: int = 3) -> Path:
    """images/ and masks/ with n 64x64 images of two bright cells each."""
    from cellseg_gui.core.data.maskwrite import write_mask

    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        inst = np.zeros((64, 64), np.uint16)
        inst[8:24, 8:24], inst[30:50, 30:46] = 3, 9
        img = (40 + 150 * (inst > 0) + rng.normal(0, 8, inst.shape)).clip(0, 255)
        write_mask(data / "images" / f"im{i}.tif", img.astype(np.uint8))
        write_mask(data / "masks" / f"im{i}.tif", inst)
    return data


def test_models_records_read_the_metrics_training_writes(tmp_path):
    """A bundle written by a real training run shows its validation Jaccard and AP in the
    models list (the list read a key that training never wrote)."""
    from cellseg_gui.cli import main
    from cellseg_gui.core.model.bundle import read_bundle_meta

    data = _cells_folder(tmp_path / "d", seed=1)
    model = tmp_path / "models" / "m.cellseg"
    model.parent.mkdir()
    args = ["train", str(data), "--out", str(model), "--epochs", "1", "--steps-per-epoch", "2",
            "--val", "im2", "--hidden", "4", "--depth", "2", "--crop", "64", "--batch", "2",
            "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    metrics = read_bundle_meta(model)["metrics"]

    from cellseg_gui.core.data.project import Project
    from cellseg_gui.core.model.model_registry import model_records

    recs = model_records(Project(tmp_path))
    rec = next(r for r in recs if r.path == str(model))
    assert rec.best_val == pytest.approx(metrics["val_fg_jaccard"])
    assert rec.best_ap50 == pytest.approx(metrics["val_ap50"])


def test_train_info_and_model_card_name_the_same_best_epoch(tmp_path, capsys):
    """One definition (1-based, as the plots count): train said 7, info 6, the card 5."""
    import re

    from cellseg_gui.cli import main
    from cellseg_gui.core.model.bundle import read_bundle_meta

    data = _cells_folder(tmp_path / "d", seed=2)
    model = tmp_path / "m.cellseg"
    args = ["train", str(data), "--out", str(model), "--epochs", "3", "--steps-per-epoch", "2",
            "--val", "im2", "--hidden", "4", "--depth", "2", "--crop", "64", "--batch", "2",
            "--device", "cpu", "--patience", "0"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    trained = int(re.search(r"best at epoch (\d+):", out).group(1))
    best_lines = [ln for ln in out.splitlines() if ln.startswith("epoch ") and "*best" in ln]
    assert int(best_lines[-1].split()[1].split("/")[0]) == trained  # the epoch line agrees
    assert main(["info", str(model)]) == 0
    info = capsys.readouterr().out
    assert f"best epoch {trained}" in info
    card = J.model_card(read_bundle_meta(model))
    assert f"- best epoch: {trained}" in card
