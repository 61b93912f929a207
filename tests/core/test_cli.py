"""The ``cellseg`` command line: real files in tmp_path, tiny models, exit codes and the
one-line errors a user sees."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellseg_gui.cli import main
from cellseg_gui.core.scores.instances import score_instances

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--hidden", "4", "--depth", "2", "--crop", "64", "--batch", "2", "--device", "cpu"]


def _blobs(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A grey image with bright discs and its instance mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((size, size), np.uint16)
    for k in range(1, 5):
        cy, cx = rng.integers(8, size - 8, 2)
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = k * 7
    img = (40 + 150 * (inst > 0) + rng.normal(0, 8, (size, size))).clip(0, 255).astype(np.uint8)
    return img, inst


def _dataset(root: Path, n: int = 3, size: int = 64) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, inst = _blobs(i, size)
        tifffile.imwrite(root / "images" / f"im{i}.tif", img)
        tifffile.imwrite(root / "masks" / f"im{i}.tif", inst)
    return root


def _tiny_bundle(path: Path, mask_mode: str) -> Path:
    import torch

    from cellseg_gui.core.config import ModelConfig, NormConfig
    from cellseg_gui.core.model.bundle import make_meta, save_bundle
    from cellseg_gui.core.model.unet import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(hidden=4, depth=2, n_classes=3)
    meta = make_meta(cfg, mask_mode=mask_mode, boundary_width=2, channels="grey", norm=NormConfig())
    save_bundle(path, build_model(cfg), meta)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A tiny untrained 3-class instance-mode bundle: enough to test the plumbing."""
    return _tiny_bundle(tmp_path_factory.mktemp("model") / "tiny.cellseg", "instances")


@pytest.fixture(scope="module")
def classes_model(tmp_path_factory) -> Path:
    """The same with masks read as class ids 0..2."""
    return _tiny_bundle(tmp_path_factory.mktemp("model") / "classes.cellseg", "classes")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in err
    return "\n".join(lines)


# --------------------------------------------------------------------------- help, import


def test_help_is_fast_and_does_not_import_torch():
    code = (
        "import sys; from cellseg_gui.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6', 'pyqtgraph')]\n"
        "print('IMPORTED', bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "IMPORTED []" in out.stdout, out.stdout + out.stderr
    assert "predict" in out.stdout and "lr-find" in out.stdout


@pytest.mark.parametrize(
    "cmd", ["predict", "evaluate", "export", "info", "train", "lr-find", "check", "inspect"]
)
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "exit codes" in capsys.readouterr().out


def test_usage_error_is_one_line_exit_2(capsys):
    code, _, err = _run_sysexit(capsys, "train")
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error: cellseg train:")


def _run_sysexit(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def test_python_dash_m_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cellseg_gui.cli", "info", str(tmp_path / "nope.cellseg")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {tmp_path / 'nope.cellseg'}: file not found"


# --------------------------------------------------------------------------- info, export


def test_info_describes_model(model_path, capsys):
    code, out, _ = _run(capsys, "info", model_path)
    assert code == 0
    assert "hidden 4, depth 2" in out and "3 classes" in out and "instances" in out
    code, out, _ = _run(capsys, "info", model_path, "--json")
    assert json.loads(out)["architecture"]["hidden"] == 4


def test_info_on_text_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "model.cellseg"
    bad.write_text("hello")
    code, _, err = _run(capsys, "info", bad)
    assert code == 2
    assert _one_error_line(err).startswith(f"error: {bad}:")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt,ext", [("torchscript", "pt"), ("onnx", "onnx")])
def test_export_then_predict_with_export(model_path, tmp_path, capsys, fmt, ext):
    target = tmp_path / f"m.{ext}"
    code, out, err = _run(capsys, "export", model_path, "--format", fmt, "--out", target)
    assert code == 0, err
    assert target.exists() and "checked" in out
    img, _ = _blobs(1)
    tifffile.imwrite(tmp_path / "a.tif", img)
    code, _, err = _run(capsys, "predict", target, tmp_path / "a.tif", "--out", tmp_path / "o")
    assert code == 0, err
    assert tifffile.imread(tmp_path / "o" / "a.tif").shape == img.shape


# --------------------------------------------------------------------------- predict


def test_predict_folder_with_bad_files_processes_the_rest(model_path, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        tifffile.imwrite(src / f"good{i}.tif", _blobs(i)[0])
    (src / "empty.tif").write_bytes(b"")
    (src / "text.png").write_text("not an image at all")
    good = src / "good0.tif"
    (src / "trunc.tif").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    tifffile.imwrite(src / "nan.tif", np.full((32, 32), np.nan, np.float32))
    out_dir = tmp_path / "out"
    code, out, err = _run(
        capsys, "predict", model_path, src, tmp_path / "missing.tif", "--out", out_dir
    )
    assert code == 2
    errors = _one_error_line(err).splitlines()
    bad = {"empty.tif", "text.png", "trunc.tif", "nan.tif", "missing.tif"}
    assert len(errors) == len(bad)
    for name in bad:
        assert sum(f"{name}: " in e for e in errors) == 1, (name, errors)
    assert any("empty" in e and "empty.tif" in e for e in errors)
    assert any("NaN" in e and "nan.tif" in e for e in errors)
    assert sorted(p.name for p in out_dir.iterdir()) == ["good0.tif", "good1.tif"]
    labels = tifffile.imread(out_dir / "good0.tif")
    assert labels.dtype == np.uint8 and labels.shape == (64, 64) and labels.max() <= 2


def test_predict_instances_writes_int_labels(model_path, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", _blobs(0)[0])
    code, out, _ = _run(
        capsys, "predict", model_path, tmp_path / "a.tif", "--out", tmp_path / "o",
        "--instances", "--tile", "32", "--tta",
    )  # fmt: skip
    assert code == 0
    assert "cells" in out
    # 16-bit, as Cellpose writes instance masks: Fiji opens 32-bit integers as floats
    assert tifffile.imread(tmp_path / "o" / "a.tif").dtype == np.uint16


def _fixed_cells(monkeypatch, cells: np.ndarray) -> None:
    from cellseg_gui.core.model import bundle as bundle_mod
    from cellseg_gui.core.model.predict import Prediction

    def fixed(self, raw, **kw):
        return cells.copy(), Prediction((cells > 0).astype(np.uint8), None)

    monkeypatch.setattr(bundle_mod._Predictor, "predict_cells", fixed)


def test_ids_past_65535_widen_a_tiff_and_a_png_says_it_cannot_hold_them(
    model_path, tmp_path, capsys, monkeypatch
):
    """Ids are never wrapped: a TIFF widens to 32 bits; a PNG (16 bits at most) gets a
    line naming the file and the problem, and the other images are still written."""
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((300, 300), np.uint16))
    cells = np.arange(1, 300 * 300 + 1, dtype=np.int32).reshape(300, 300)
    _fixed_cells(monkeypatch, cells)
    code, out, err = _run(capsys, "predict", model_path, tmp_path / "a.tif",
                          "--out", tmp_path / "t", "--instances")  # fmt: skip
    assert code == 0, err
    got = tifffile.imread(tmp_path / "t" / "a.tif")
    assert got.dtype == np.uint32 and np.array_equal(got, cells)
    code, out, err = _run(capsys, "predict", model_path, tmp_path / "a.tif",
                          "--out", tmp_path / "p", "--instances", "--ext", "png")  # fmt: skip
    assert code == 2
    assert f"{tmp_path / 'p' / 'a.png'}: " in err and "16-bit PNG" in err
    assert "Traceback" not in err and not (tmp_path / "p" / "a.png").exists()


def test_an_image_without_cells_gets_no_roi_set_and_loses_an_old_one(
    model_path, tmp_path, capsys, monkeypatch
):
    """Fiji's ROI Manager refuses a ROI set without ROIs, and a set left from an earlier
    run would show cells the new mask does not have: none is written, the old one goes,
    and the line says why. The measurements still say 0 cells."""
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((40, 40), np.uint16))
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "a_rois.zip").write_bytes(b"an older run's ROIs")
    _fixed_cells(monkeypatch, np.zeros((40, 40), np.int32))
    code, out, err = _run(capsys, "predict", model_path, tmp_path / "a.tif", "--out",
                          tmp_path / "o", "--instances", "--measure", "--rois")  # fmt: skip
    assert code == 0, err
    assert "(0 cells, a_cells.csv, no ROI set (no cells to outline))" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "a.tif",
        "a_cells.csv",
        "cells_summary.csv",
    ]
    summary = list(csv.DictReader(open(tmp_path / "o" / "cells_summary.csv")))
    assert summary[0]["cells"] == "0"


def test_a_very_large_image_is_predicted_band_by_band_into_a_tiff(
    model_path, tmp_path, capsys, monkeypatch
):
    """Above the size limit (lowered here) the cells go band by band into a tiled TIFF,
    the same cells as the whole-image path; the user is told, also that no PNG and no
    measurements are made for it; the other images of the folder go on as before."""
    import cellseg_gui.core.model.bands as bands

    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "huge.tif", np.tile(_blobs(0)[0], (3, 2)))
    tifffile.imwrite(src / "small.tif", _blobs(1)[0][:40, :40])
    whole = tmp_path / "whole"
    assert _run(capsys, "predict", model_path, src / "huge.tif", "--out", whole,
                "--instances")[0] == 0  # fmt: skip
    monkeypatch.setattr(bands, "BAND_PIXELS", 2000)
    code, out, err = _run(
        capsys, "predict", model_path, src, "--out", tmp_path / "o", "--instances",
        "--ext", "png", "--measure",
    )  # fmt: skip
    assert code == 0, err
    assert "huge.tif: " in err and "band by band" in err and "not .png" in err
    assert "no --measure" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "cells_summary.csv", "huge.tif", "small.png", "small_cells.csv",
    ]  # fmt: skip
    got = tifffile.imread(tmp_path / "o" / "huge.tif")
    ref = tifffile.imread(whole / "huge.tif")
    assert got.shape == ref.shape and got.dtype == np.uint32
    assert score_instances(ref, got).ap(0.9) == 1.0
    assert f"({int(got.max())} cells)" in out


def _with_postprocess(src: Path, dst: Path, pp: dict) -> Path:
    from cellseg_gui.core.model.bundle import load_bundle, save_bundle

    b = load_bundle(src, "cpu")
    save_bundle(dst, b.model, dict(b.meta, postprocess=pp))
    return dst


def test_every_model_format_gives_the_same_cells(model_path, tmp_path, capsys):
    """The bundle's post-processing travels into TorchScript and ONNX: predict --instances
    with each file gives the same cells, and the settings are the bundle's own."""
    pp = {"marker_threshold": 0.7, "min_size": 3, "chosen": "tuned on 2 validation image(s)"}
    bundle = _with_postprocess(model_path, tmp_path / "pp.cellseg", pp)
    models = {"bundle": bundle}
    for fmt, ext in (("torchscript", "pt"), ("onnx", "onnx")):
        models[fmt] = tmp_path / f"m.{ext}"
        code, _, err = _run(capsys, "export", bundle, "--format", fmt, "--out", models[fmt])
        assert code == 0, err
    img, _ = _blobs(3)
    tifffile.imwrite(tmp_path / "a.tif", img)
    cells = {}
    for name, path in models.items():
        code, out, err = _run(
            capsys, "predict", path, tmp_path / "a.tif", "--out", tmp_path / name, "--instances"
        )
        assert code == 0, err
        assert "cells: marker threshold 0.7, minimum size 3 px (tuned on 2" in err
        cells[name] = tifffile.imread(tmp_path / name / "a.tif")
    assert cells["bundle"].max() > 0
    assert np.array_equal(cells["bundle"], cells["torchscript"])
    assert np.array_equal(cells["bundle"], cells["onnx"])


def test_old_bundle_without_postprocess_uses_defaults_and_says_so(model_path, tmp_path, capsys):
    import json as _json
    import zipfile

    old = tmp_path / "old.cellseg"
    with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(".json"):
                meta = _json.loads(data)
                meta.pop("postprocess", None)
                data = _json.dumps(meta).encode()
            dst.writestr(item, data)
    tifffile.imwrite(tmp_path / "a.tif", _blobs(0)[0])
    code, _, err = _run(
        capsys, "predict", old, tmp_path / "a.tif", "--out", tmp_path / "o", "--instances"
    )
    assert code == 0, err
    assert "no post-processing settings" in err and "using the defaults" in err
    assert "Traceback" not in err


def test_predict_measure_and_rois_describe_the_written_cells(
    model_path, tmp_path, capsys, monkeypatch
):
    """Per-cell CSV, summary and Fiji ROI set agree with the instance mask written."""
    import roifile

    from cellseg_gui.core.model import bundle as bundle_mod

    img, _ = _blobs(0)
    tifffile.imwrite(tmp_path / "a.tif", img)
    cells = np.zeros(img.shape, np.int32)
    cells[5:15, 5:20] = 1  # 150 px
    cells[30:40, 30:36] = 2  # 60 px

    def fixed(self, raw, **kw):
        from cellseg_gui.core.model.predict import Prediction

        return cells.copy(), Prediction((cells > 0).astype(np.uint8), None)

    monkeypatch.setattr(bundle_mod._Predictor, "predict_cells", fixed)
    code, out, err = _run(
        capsys, "predict", model_path, tmp_path / "a.tif", "--out", tmp_path / "o",
        "--instances", "--measure", "--rois",
    )  # fmt: skip
    assert code == 0, err
    assert np.array_equal(tifffile.imread(tmp_path / "o" / "a.tif"), cells)
    rows = list(csv.DictReader(open(tmp_path / "o" / "a_cells.csv")))
    assert [r["label"] for r in rows] == ["1", "2"]
    assert [float(r["area_px"]) for r in rows] == [150.0, 60.0]
    assert float(rows[0]["centroid_x"]) == pytest.approx(12.0)
    assert float(rows[0]["mean_intensity"]) == pytest.approx(img[5:15, 5:20].mean(), rel=1e-3)
    summary = list(csv.DictReader(open(tmp_path / "o" / "cells_summary.csv")))
    assert summary[0]["image"] == "a.tif" and summary[0]["cells"] == "2"
    assert float(summary[0]["mean_area_px"]) == 105.0
    rois = roifile.roiread(tmp_path / "o" / "a_rois.zip")
    assert [r.name for r in rois] == ["cell-0001", "cell-0002"]
    xy = rois[0].coordinates()
    assert xy[:, 0].min() == pytest.approx(5, abs=0.6) and xy[:, 0].max() == pytest.approx(
        20, abs=0.6
    )
    code, _, err = _run(
        capsys, "predict", model_path, tmp_path / "a.tif", "--out", tmp_path / "p", "--measure"
    )
    assert code == 2 and "--measure and --rois need --instances" in err


def test_predict_empty_folder(model_path, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "predict", model_path, tmp_path / "empty", "--out", tmp_path / "o")
    assert code == 2
    assert err.strip() == (  # what was looked for, not only that nothing was found
        f"error: {tmp_path / 'empty'}: no images found in this folder "
        "(looked for .tif, .tiff, .png, .jpg, .jpeg, .bmp)"
    )
    (tmp_path / "empty" / "images").mkdir()  # a data set: its images/ folder is read
    (tmp_path / "empty" / "images" / "notes.txt").write_text("not an image")
    code, _, err = _run(capsys, "predict", model_path, tmp_path / "empty", "--out", tmp_path / "o")
    assert code == 2 and "no images found in its images/ folder (looked for .tif" in err


def test_predict_missing_model(tmp_path, capsys):
    code, _, err = _run(capsys, "predict", tmp_path / "x.cellseg", tmp_path, "--out", tmp_path)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'x.cellseg'}: file not found"


# --------------------------------------------------------------------------- data commands


def test_evaluate_table_headline_and_json_agree(model_path, tmp_path, capsys):
    data = _dataset(tmp_path / "d")
    code, out, err = _run(capsys, "evaluate", model_path, data)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-2].startswith("foreground jaccard (mean over images): ")
    assert lines[-1].startswith("AP@0.5 (mean over images): ")
    # a log (not a terminal) ends its progress at 100%, not on the first image's line
    assert [ln for ln in err.splitlines() if "%" in ln][-1].endswith(
        "100% evaluated 3 of 3 image(s)"
    )
    rows = [ln.split() for ln in lines if ln.split()[0] in ("im0", "im1", "im2")]
    assert len(rows) == 3
    fg = float(lines[-2].rsplit(": ", 1)[1])
    ap = float(lines[-1].rsplit(": ", 1)[1])
    # the headline is the mean of the table's own columns, not another figure
    assert fg == pytest.approx(np.mean([float(r[1]) for r in rows]), abs=1e-4)
    assert ap == pytest.approx(np.mean([float(r[2]) for r in rows]), abs=1e-4)
    assert sum(int(r[4]) for r in rows) == 12  # four discs in each image
    code, js, _ = _run(capsys, "evaluate", model_path, data, "--json")
    d = json.loads(js)
    assert d["fg_jaccard_mean_over_images"] == pytest.approx(fg, abs=1e-4)
    assert d["ap_mean_over_images"]["0.5"] == pytest.approx(ap, abs=1e-4)
    assert d["true_cells"] == 12 and len(d["images"]) == 3
    # every summary figure of --json is in the text too (the pooled AP@0.75 and AP@0.9
    # were JSON-only), under the same definition
    text = dict(ln.rsplit(": ", 1) for ln in lines if " over " in ln)
    for t, v in d["ap_pooled_over_cells"].items():
        assert float(text[f"AP@{t} (pooled over cells)"]) == pytest.approx(v, abs=1e-4)
    for t, v in d["ap_mean_over_images"].items():
        assert float(text[f"AP@{t} (mean over images)"]) == pytest.approx(v, abs=1e-4)


def test_evaluate_scores_cells_of_a_perfect_prediction(tmp_path, capsys, monkeypatch):
    """With a model that predicts the mask itself, AP is 1 and the counts match."""
    from cellseg_gui.core.data.masks import instances_to_classes
    from cellseg_gui.core.model import bundle as bundle_mod
    from cellseg_gui.core.model.predict import Prediction

    data = _dataset(tmp_path / "d")
    model = _tiny_bundle(tmp_path / "m.cellseg", "instances")
    truth = {}
    for i in range(3):
        img = tifffile.imread(data / "images" / f"im{i}.tif")
        inst = np.zeros((64, 64), np.uint16)
        for k, (y, x) in enumerate([(4, 4), (4, 40), (40, 4), (36, 30 + i)]):
            inst[y : y + 14, x : x + 12] = 10 + k  # the last two touch in im2
        tifffile.imwrite(data / "masks" / f"im{i}.tif", inst)
        truth[img.tobytes()] = inst

    def perfect(self, raw, **kw):
        labels = instances_to_classes(truth[np.asarray(raw).tobytes()])
        probs = np.stack([labels == k for k in range(3)]).astype(np.float32)
        return Prediction(labels=labels, probs=probs)

    monkeypatch.setattr(bundle_mod._Predictor, "predict", perfect)
    code, out, err = _run(capsys, "evaluate", model, data)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-1] == "AP@0.5 (mean over images): 1.0000"
    assert lines[-2] == "foreground jaccard (mean over images): 1.0000"
    assert "true cells (total): 12" in lines and "predicted cells (total): 12" in lines


def test_evaluate_reports_bad_masks_and_goes_on(classes_model, tmp_path, capsys):
    data = _dataset(tmp_path / "d", n=4)
    for i in range(4):  # class masks 0..2 for the classes-mode model
        inst = tifffile.imread(data / "masks" / f"im{i}.tif")
        tifffile.imwrite(data / "masks" / f"im{i}.tif", (inst > 0).astype(np.uint8))
    tifffile.imwrite(data / "masks" / "im1.tif", np.zeros((50, 64), np.uint8))
    classes = np.zeros((64, 64), np.uint8)
    classes[10:20, 10:20] = 5
    classes[30:40, 30:40] = 3
    tifffile.imwrite(data / "masks" / "im2.tif", classes)
    code, out, err = _run(capsys, "evaluate", classes_model, data)
    assert code == 2
    errors = _one_error_line(err).splitlines()
    assert len(errors) == 2
    # sizes as the README gives them, height x width, and said so
    assert any(
        e.endswith("im1.tif: mask is 50 x 64 but its image is 64 x 64 (height x width)")
        for e in errors
    )
    assert any("im2.tif" in e and "classes" in e for e in errors)
    lines = out.strip().splitlines()
    assert lines[-1].startswith("AP@0.5 (mean over images): ")
    assert "not instance masks; cells are their connected components" in out


def test_evaluate_empty_folder(model_path, tmp_path, capsys):
    (tmp_path / "e").mkdir()
    code, _, err = _run(capsys, "evaluate", model_path, tmp_path / "e")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {tmp_path / 'e'}")


def test_inspect_text_and_json(tmp_path, capsys):
    data = _dataset(tmp_path / "d")
    code, out, _ = _run(capsys, "inspect", data)
    assert code == 0
    assert "3 image(s), 3 with masks" in out and "no problems found" in out
    code, out, _ = _run(capsys, "inspect", data, "--json")
    d = json.loads(out)
    assert d["n_images"] == 3 and d["mask_mode"] == "instances"


def test_inspect_flags_bad_files(tmp_path, capsys):
    data = _dataset(tmp_path / "d")
    tifffile.imwrite(data / "masks" / "im0.tif", np.zeros((10, 10), np.uint8))
    code, out, err = _run(capsys, "inspect", data)
    assert code == 2
    line = _one_error_line(err)
    assert (
        f"{data / 'masks' / 'im0.tif'}: mask is 10 x 10 but its image is 64 x 64 (height x width)"
        in line
    )
    assert "2 problem(s) (1 error(s), 1 warning(s))" in out  # the resized mask is empty


def test_train_tiny_writes_bundle_csv_and_progress(tmp_path, capsys):
    data = _dataset(tmp_path / "d")
    target = tmp_path / "m.cellseg"
    code, out, err = _run(
        capsys, "train", data, "--out", target, "--epochs", "1", "--steps-per-epoch", "2",
        "--val", "im2", *TINY,
    )  # fmt: skip
    assert code == 0, err
    run_notes = err
    assert target.exists()
    assert "epoch 1/1" in out
    epoch_line = next(ln for ln in out.splitlines() if ln.startswith("epoch 1/1"))
    ap_shown = float(epoch_line.split("val AP@0.5 ")[1].split()[0])
    rows = list(csv.DictReader(open(tmp_path / "m_history.csv")))
    assert len(rows) == 1 and "train_loss" in rows[0] and "val_fg_jaccard" in rows[0]
    assert float(rows[0]["val_ap50"]) == pytest.approx(ap_shown, abs=1e-4)
    from cellseg_gui.core.model.bundle import read_bundle_meta

    meta = read_bundle_meta(target)
    # the run chose its post-processing on its validation image and says so
    assert meta["postprocess"]["chosen"] == "tuned on 1 validation image(s)"
    assert 0.0 <= meta["metrics"]["val_ap50"] <= 1.0
    assert f"validation AP@0.5 {meta['metrics']['val_ap50']:.4f}" in out
    assert meta["architecture"]["hidden"] == 4 and meta["mask_mode"] == "instances"
    # downsample auto: the run says what it chose and the bundle records that number
    chosen = meta["architecture"]["downsample"]
    assert chosen in (1, 2) and f"note: downsample {chosen}:" in run_notes
    code, out, _ = _run(capsys, "info", target)
    assert "1 epochs" in out and "2 train / 1 val" in out
    assert f"hidden 4, depth 2, downsample {chosen}," in out
    forced = tmp_path / "forced.cellseg"
    code, out, err = _run(
        capsys, "train", data, "--out", forced, "--epochs", "1", "--steps-per-epoch", "1",
        "--val", "im2", "--downsample", str(3 - chosen), *TINY,
    )  # fmt: skip
    assert code == 0, err
    assert read_bundle_meta(forced)["architecture"]["downsample"] == 3 - chosen
    assert "downsample" not in err
    code, _, err = _run_sysexit(
        capsys, "train", str(data), "--out", str(forced), "--downsample", "9", *TINY
    )
    assert code == 2 and "--downsample: expected 1 to 8" in err
    assert len(err.strip().splitlines()) == 1


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_it_is_allocated(tmp_path, capsys):
    """--batch 20000 --crop 512 climbed past 7 GB in 21 s with no message."""
    import resource
    import time

    data = _dataset(tmp_path / "d", n=3)
    t0 = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out, err = _run(
        capsys, "train", data, "--out", tmp_path / "m.cellseg", "--epochs", "1",
        "--hidden", "16", "--depth", "4", "--crop", "512", "--batch", "20000", "--device", "cpu",
    )  # fmt: skip
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert code == 1, err
    assert "a batch of 20000 crops of 512 pixels needs about" in err and "TB" in err
    assert "lower --batch or --crop (a batch of" in err
    assert time.monotonic() - t0 < 30 and grew_mb < 1000


def test_a_run_that_learned_nothing_does_not_exit_0(tmp_path, capsys):
    """--lr 1000 trained to a model that finds no cell, and the run said success."""
    data = _dataset(tmp_path / "d", n=4)
    target = tmp_path / "m.cellseg"
    code, out, err = _run(
        capsys, "train", data, "--out", target, "--epochs", "3", "--steps-per-epoch", "5",
        "--lr", "1000", *TINY,
    )  # fmt: skip
    assert code == 1, err
    assert "the model learned nothing usable" in err and "lower the learning rate" in err
    assert target.exists()  # the model is still written: the user may look at it


def test_useless_means_found_nothing_or_collapsed_after_calling_everything_a_cell(tmp_path):
    """The rule behind the test above, on real samples, so it holds whatever the first
    epoch of a --lr 1000 run scores on a given machine."""
    import numpy as np

    from cellseg_gui.cli.training import _learned_nothing
    from cellseg_gui.core.data.dataset import find_pairs, load_samples

    samples, _ = load_samples(find_pairs(_dataset(tmp_path / "d", n=2)), mask_mode="instances")
    val = samples[1]
    t = np.asarray(val.target)
    everything = float((t > 0).mean())  # the Jaccard of calling every pixel a cell
    assert 0.05 < everything < 0.9

    def res(*val_j):
        return {"history": {"val_fg_jaccard": list(val_j)}, "split": {"val": [val.name]}}

    assert _learned_nothing(0.0, res(0.0), samples)
    # best no better than all-foreground, and the run ended finding nothing
    assert _learned_nothing(everything, res(everything, 0.0, 0.0), samples)
    # a short run whose only epoch calls everything a cell is still learning
    assert not _learned_nothing(everything, res(everything), samples)
    # a run that learned before it collapsed keeps its best model
    best = min(1.0, everything + 0.2)
    assert not _learned_nothing(best, res(best, 0.0), samples)


def test_train_uses_the_split_and_settings_the_window_saved(tmp_path, capsys):
    """Images marked 'val' in the window were trained on by the CLI, which drew its own
    split: now the project's split and saved form are used, and the first lines say so."""
    from cellseg_gui.core.config import TrainConfig
    from cellseg_gui.core.data.project import open_project
    from cellseg_gui.core.model.bundle import read_bundle_meta

    data = _dataset(tmp_path / "d", n=4)
    project = open_project(data)
    project.set_split({"im0": "train", "im1": "val", "im2": "train", "im3": "excluded"})
    saved = TrainConfig()
    saved.model.hidden, saved.model.depth, saved.crop, saved.batch_size = 4, 2, 64, 2
    saved.seed = 7
    project.set_training_settings({"config": saved.to_dict()})
    target = tmp_path / "m.cellseg"
    code, out, err = _run(
        capsys, "train", data, "--out", target, "--epochs", "1", "--steps-per-epoch", "1",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    split = read_bundle_meta(target)["training"]["split"]
    assert split["val"] == ["im1"] and sorted(split["train"]) == ["im0", "im2"]
    assert f"validation: 1 image(s) marked 'val' in {project.path} (im1)" in err
    assert "1 image(s) marked 'excluded' in the project: left out" in err
    assert "settings: the training form saved in" in err
    meta = read_bundle_meta(target)
    assert meta["architecture"]["hidden"] == 4 and meta["training"]["settings"]["seed"] == 7
    # an option given on the command line still wins, and --val overrides the project
    code, out, err = _run(
        capsys, "train", data, "--out", target, "--epochs", "1", "--steps-per-epoch", "1",
        "--device", "cpu", "--hidden", "6", "--val", "im0",
    )  # fmt: skip
    assert code == 0, err
    meta = read_bundle_meta(target)
    assert meta["architecture"]["hidden"] == 6 and meta["training"]["split"]["val"] == ["im0"]
    assert "validation: 1 image(s) given by --val" in err


def test_flows_are_on_by_default_also_for_a_form_saved_before_them_and_no_flows_turns_them_off(
    tmp_path, capsys
):
    from cellseg_gui.core.config import TrainConfig
    from cellseg_gui.core.data.project import open_project
    from cellseg_gui.core.model.bundle import read_bundle_meta

    assert TrainConfig().model.flow_head and TrainConfig.for_device("cuda").model.flow_head
    data = _dataset(tmp_path / "d", n=3)
    project = open_project(data)
    form = TrainConfig()
    form.model.hidden, form.model.depth, form.crop, form.batch_size = 4, 2, 64, 2
    old = form.to_dict()
    del old["model"]["flow_head"]  # a form saved before flows existed
    project.set_training_settings({"config": old})
    argv = ("--epochs", "1", "--steps-per-epoch", "1", "--device", "cpu")
    code, _, err = _run(capsys, "train", data, "--out", tmp_path / "a.cellseg", *argv)
    assert code == 0, err
    arch = read_bundle_meta(tmp_path / "a.cellseg")["architecture"]
    assert arch["flow_head"] is True and arch["hidden"] == 4
    code, out, err = _run(capsys, "info", tmp_path / "a.cellseg")
    assert code == 0 and ", flows" in out
    code, _, err = _run(
        capsys, "train", data, "--out", tmp_path / "b.cellseg", "--no-flows", *argv
    )  # fmt: skip
    assert code == 0, err
    assert read_bundle_meta(tmp_path / "b.cellseg")["architecture"]["flow_head"] is False
    # a checkpoint's or bundle's settings keep an absent key as off (their weights)
    assert not TrainConfig.from_dict(old).model.flow_head


def test_train_bad_inputs(tmp_path, capsys):
    code, _, err = _run(capsys, "train", tmp_path / "nope", "--out", tmp_path / "m", *TINY)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'nope'}: folder not found"
    data = _dataset(tmp_path / "d")
    code, _, err = _run(capsys, "train", data, "--out", tmp_path / "m", "--val", "zzz", *TINY)
    assert code == 2 and "zzz" in err and len(err.strip().splitlines()) == 1


def test_lr_find_writes_csv_png_and_suggestion(tmp_path, capsys):
    """With one broken image in the folder: the rest is used, the bad one reported, exit 2."""
    data = _dataset(tmp_path / "d")
    (data / "images" / "broken.tif").write_bytes(b"II*\x00garbage")
    (data / "masks" / "broken.tif").write_bytes(b"")
    base = tmp_path / "curve"
    code, out, err = _run(
        capsys, "lr-find", data, "--out", base, "--lr-steps", "8", "--min-lr", "1e-4",
        "--max-lr", "1", *TINY,
    )  # fmt: skip
    assert code == 2, err
    assert len(_one_error_line(err).splitlines()) == 1 and "broken.tif" in err
    last = out.strip().splitlines()[-1]
    assert last.startswith("suggested lr: ") and float(last.split(": ")[1]) > 0
    rows = (tmp_path / "curve.csv").read_text().splitlines()
    assert rows[0] == "lr,loss,smoothed" and len(rows) >= 3
    with Image.open(tmp_path / "curve.png") as im:
        assert im.size == (640, 400)


def test_check_runs_inspection_and_overfit(tmp_path, capsys):
    data = _dataset(tmp_path / "d", n=2)
    code, out, err = _run(capsys, "check", data, "--max-steps", "3", *TINY)
    assert code in (0, 1), err
    assert "2 image(s), 2 with masks" in out
    assert "overfit check" in out and "after" in out
    # it said "ETA 18:09" for a check that passed in 50 s: the step budget is a bound
    assert "(ends when it passes)" in err and "ETA" not in err


def test_history_csv_spreads_per_class_columns(tmp_path):
    from cellseg_gui.cli import write_history_csv

    hist = {
        "epoch": [0, 1],
        "train_loss": [1.0, 0.5],
        "val_loss": [None, 0.6],
        "train_jaccard": [[0.9, 0.1, 0.2], [0.95, 0.5, 0.4]],
    }
    write_history_csv(tmp_path / "h.csv", hist)
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert rows[1]["train_jaccard_1"] == "0.5" and rows[0]["val_loss"] == ""
    assert [r["epoch"] for r in rows] == ["1", "2"]  # as the epoch lines count


def test_lr_curve_png_is_drawn(tmp_path):
    from cellseg_gui.cli import draw_lr_curve

    lrs = list(np.logspace(-5, 0, 30))
    losses = [1.0 - 0.5 * (i / 30) for i in range(25)] + [2, 4, 8, 16, 32]
    draw_lr_curve(tmp_path / "c.png", lrs, losses, losses, 1e-3, 1e-4)
    arr = np.asarray(Image.open(tmp_path / "c.png"))
    assert (arr[..., 0] > 200).any() and (arr[..., 2] > 150).any()
    red = (arr[..., 0] > 200) & (arr[..., 1] < 100) & (arr[..., 2] < 100)
    assert red.sum() > 100  # the suggestion line


def test_ctrl_c_stops_training_and_keeps_the_best_model(tmp_path):
    import signal

    data = _dataset(tmp_path / "d")
    target = tmp_path / "m.cellseg"
    argv = ["train", str(data), "--out", str(target), "--epochs", "1000"]
    argv += ["--steps-per-epoch", "1", *TINY]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellseg_gui.cli", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("epoch 1/"):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopping" in err
    assert target.exists() and (tmp_path / "m_history.csv").exists()
    assert f"model: {target}" in out


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_only_rank0_prints_and_writes(tmp_path):
    data = _dataset(tmp_path / "d", n=4)
    target = tmp_path / "m.cellseg"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += ["-m", "cellseg_gui.cli", "train", str(data), "--out", str(target)]
    cmd += ["--epochs", "2", "--steps-per-epoch", "2", *TINY]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert sum(ln.startswith("epoch 1/2") for ln in lines) == 1  # not once per rank
    assert sum(ln.startswith("model: ") for ln in lines) == 1
    assert "2 process(es)" in proc.stderr
    assert target.exists() and (tmp_path / "m_history.csv").exists()


def test_train_reports_divergence_advice_and_noisy_labels(tmp_path, capsys, monkeypatch):
    """fit replaced by a canned run: the CLI's exit code 1, hint, advice and noisy-label
    lines are what a user reads after a diverged run."""
    from cellseg_gui.core import events as E
    from cellseg_gui.core.training import train

    def fake_fit(samples, cfg, **kw):
        yield E.Started(job="fit", device="cpu", precision="fp32", total_steps=2, epochs=2)
        yield E.SampleLosses(epoch=0, losses={"a": 0.2, "b": 0.21, "c": 0.19, "im1": 3.0})
        hist = {"epoch": [0, 1], "train_loss": [0.9, float("nan")], "lr": [0.5, 0.5]}
        yield E.Finished(
            reason=E.DIVERGED, message="loss became NaN", hint=E.DIVERGED_HINT,
            result={"history": hist},
        )  # fmt: skip

    monkeypatch.setattr(train, "fit", fake_fit)
    data = _dataset(tmp_path / "d")
    code, out, err = _run(capsys, "train", data, "--out", tmp_path / "m", "--lr", "0.5", *TINY)
    assert code == 1
    assert "error: loss became NaN" in err and "hint: The loss became NaN" in err
    assert "possibly noisy labels" in out and "im1 (3)" in out
    assert "advice: the training loss became NaN" in out and "(try: --lr 0.05)" in out


def test_export_bioimageio_package(model_path, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="bioimage.io export checks ONNX weights")
    import zipfile

    code, out, err = _run(
        capsys, "export", model_path, "--format", "bioimageio", "--out", tmp_path / "pkg"
    )
    assert code == 0, err
    written = tmp_path / "pkg.zip"
    assert written.exists() and str(written) in out
    names = zipfile.ZipFile(written).namelist()
    assert "rdf.yaml" in names and any(n.endswith(".onnx") for n in names)


def test_augment_takes_a_preset_or_a_list_of_names(capsys):
    from cellseg_gui.cli import build_parser
    from cellseg_gui.cli.training import _train_config

    def augment(*flag):
        args = build_parser().parse_args(["train", "d", "--out", "m", *flag])
        return _train_config(args).augment.to_dict()

    default = augment()
    assert augment("--augment", "default") == default
    assert not any(augment("--augment", "none").values())
    assert all(augment("--augment", "all").values())
    chosen = augment("--augment", "flips, elastic")
    assert {k for k, on in chosen.items() if on} == {"flips", "elastic"}
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", "d", "--out", "m", "--augment", "flips,wobble"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown augmentation wobble" in err and "elastic" in err


class _Payload:
    """Unpickling this writes a file: the proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, capsys):
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"cfg": {}, "model": {}, "split": {}, "x": _Payload(marker)}, evil)
    data = _dataset(tmp_path / "d")
    code, out, err = _run(
        capsys, "train", data, "--out", tmp_path / "m", "--resume", evil, "--epochs", "1",
        "--val", "im2", *TINY,
    )  # fmt: skip
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert code == 1
    line = _one_error_line(err)
    assert str(evil) in line and "refused" in line
    assert "weights_only=False" not in err and len(line.splitlines()) == 1


def test_a_mixed_precision_run_records_the_figures_evaluate_gives(tmp_path, capsys):
    """Validation under bf16 autocast is a trend; the figures a run records for its model
    (each validation image's foreground Jaccard and AP@0.5) are the ones ``cellseg
    evaluate`` gives for that bundle, which predicts in fp32 as every export does. The
    model is left undertrained on purpose: its many pixels near a tie between classes are
    where bf16 and fp32 disagree (a confident model, AP 1, agreed even without the fix)."""
    meta, row = _recorded_and_evaluated(
        capsys, _dataset(tmp_path / "d"), tmp_path / "m.cellseg",
        "--epochs", "3", "--steps-per-epoch", "4", "--amp", "bf16",
    )  # fmt: skip
    assert meta["training"]["precision"] == "bf16"
    recorded_ap = meta["training"]["per_image_val_ap50"]["im2"]
    assert row["fg_jaccard"] == pytest.approx(
        meta["training"]["per_image_val_jaccard"]["im2"], abs=1e-9
    )
    assert row["ap"]["0.5"] == pytest.approx(recorded_ap, abs=1e-9)
    assert meta["metrics"]["val_ap50"] == pytest.approx(recorded_ap, abs=1e-9)


def _recorded_and_evaluated(capsys, data: Path, target: Path, *train_args: str):
    """Train on ``data`` with ``im2`` as validation, then evaluate the bundle on ``data``:
    (the bundle's metadata, evaluate's JSON row for im2)."""
    code, _, err = _run(
        capsys, "train", data, "--out", target, "--val", "im2", *train_args, *TINY
    )  # fmt: skip
    assert code == 0, err
    from cellseg_gui.core.model.bundle import read_bundle_meta

    code, js, err = _run(capsys, "evaluate", target, data, "--json")
    assert code == 0, err
    row = next(r for r in json.loads(js)["images"] if r["name"] == "im2")
    return read_bundle_meta(target), row


def test_evaluate_gives_what_the_run_recorded_for_images_larger_than_the_tile(
    tmp_path, capsys, monkeypatch
):
    """Validation forwards an image that fits in one piece; so does prediction by
    default, so the figures a run records for its model are what ``cellseg evaluate``
    gives on the same image even when the image is larger than the default tile (with
    512 px tiles on 1022x1024 usiigaci images the two said AP@0.5 0.651 and 0.628). An
    explicit ``--tile`` still tiles (less memory on a small GPU)."""
    import cellseg_gui.core.model.predict as P

    monkeypatch.setattr(P, "DEFAULT_TILE", 64)  # the images below are larger than it
    data = _dataset(tmp_path / "d", size=128)
    target = tmp_path / "m.cellseg"
    meta, row = _recorded_and_evaluated(
        capsys, data, target, "--epochs", "4", "--steps-per-epoch", "8", "--amp", "off"
    )
    assert row["fg_jaccard"] == pytest.approx(
        meta["training"]["per_image_val_jaccard"]["im2"], abs=1e-9
    )
    assert row["ap"]["0.5"] == pytest.approx(
        meta["training"]["per_image_val_ap50"]["im2"], abs=1e-9
    )
    from cellseg_gui.core.model.bundle import load_bundle

    # the whole image, not tiles: the probabilities are the single forward's
    from cellseg_gui.core.model.predict import predict_tiled, predict_whole

    b = load_bundle(target, "cpu")
    x = b.preprocess(tifffile.imread(data / "images" / "im2.tif"))
    got = b.predict_preprocessed(x).probs
    assert np.allclose(got, predict_whole(b.model, x).probs, atol=1e-5)
    tiled = b.predict_preprocessed(x, tile=64).probs  # as asked
    assert np.array_equal(tiled, predict_tiled(b.model, x, tile=64).probs)
    assert not np.allclose(got, tiled, atol=1e-5)


def test_train_info_and_evaluate_name_each_figure_by_one_definition(tmp_path, capsys):
    """The foreground Jaccard a run records is pooled over the validation pixels and its
    AP@0.5 the mean over the validation images: the end of ``train`` and ``info`` say so,
    and ``evaluate`` on those images gives the same two figures under the same names (a
    user had compared the run's 0.6370 with evaluate's headline mean, 0.6353)."""
    data = _dataset(tmp_path / "d", n=4)
    target = tmp_path / "m.cellseg"
    code, out, err = _run(
        capsys, "train", data, "--out", target, "--epochs", "3", "--steps-per-epoch", "4",
        "--val", "im2,im3", "--amp", "off", *TINY,
    )  # fmt: skip
    assert code == 0, err
    from cellseg_gui.core.model.bundle import read_bundle_meta

    metrics = read_bundle_meta(target)["metrics"]
    fg, ap = metrics["val_fg_jaccard"], metrics["val_ap50"]
    assert f"validation foreground Jaccard {fg:.4f}, pooled over pixels" in out
    assert f"validation AP@0.5 {ap:.4f} (mean over images" in out
    assert "validation images (2): im2, im3" in out
    code, info, err = _run(capsys, "info", target)
    assert code == 0, err
    assert f"validation foreground Jaccard (pooled over pixels) {fg:.4f}" in info
    per_image = read_bundle_meta(target)["training"]["per_image_val_jaccard"]
    mean = sum(per_image.values()) / len(per_image)
    assert f"validation foreground Jaccard (mean over images) {mean:.4f}" in info
    assert f"; {mean:.4f} mean over images)" in out  # the end of train says both
    assert f"validation AP@0.5 (mean over images, with its post-processing) {ap:.4f}" in info
    val = tmp_path / "val"
    for sub in ("images", "masks"):
        (val / sub).mkdir(parents=True)
        for name in ("im2.tif", "im3.tif"):
            (val / sub / name).write_bytes((data / sub / name).read_bytes())
    code, js, err = _run(capsys, "evaluate", target, val, "--json")
    assert code == 0, err
    d = json.loads(js)
    assert d["fg_jaccard_pooled_over_pixels"] == pytest.approx(fg, abs=1e-9)
    assert d["fg_jaccard_mean_over_images"] == pytest.approx(mean, abs=1e-9)  # its headline
    assert d["ap_mean_over_images"]["0.5"] == pytest.approx(ap, abs=1e-9)
    assert d["trained_on"] == [] and "training split" not in err
    # the whole folder: the images the model trained on are named (by their bytes)
    code, js, err = _run(capsys, "evaluate", target, data, "--json")
    assert code == 0, err
    assert json.loads(js)["trained_on"] == ["im0", "im1"]
    assert "warning: 2 of 4 image(s) were in this model's training split (im0, im1)" in err


# --------------------------------------------------------------------------- a new user's bugs


@pytest.mark.parametrize("command", ["info", "train"])
@pytest.mark.parametrize("kind", ["text", "zip"])
def test_a_file_that_is_not_a_bundle_is_one_line_exit_2(tmp_path, kind, command):
    """In a fresh process (the test session may have imported core.model.bundle already,
    which hid the traceback): a text file, and a zip without cellseg.json."""
    import zipfile

    bad = tmp_path / f"{kind}.cellseg"
    if kind == "text":
        bad.write_text("hello")
    else:
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("weights.bin", b"0")
    argv = ["info", str(bad)]
    if command == "train":  # fine-tuning from it (a reviewer found its traceback)
        data = _dataset(tmp_path / "d")
        argv = ["train", str(data), "--init", str(bad), "--out", str(tmp_path / "m.cellseg")]
    out = subprocess.run(
        [sys.executable, "-m", "cellseg_gui.cli", *argv], capture_output=True, text=True, cwd=ROOT
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith(f"error: {bad}: not a cellseg bundle")
    assert len(out.stderr.strip().splitlines()) == 1


def test_evaluate_names_an_image_whose_mask_has_no_cells_and_calls_it_an_instance_mask(
    model_path, tmp_path, capsys
):
    """An all-zero mask is a valid mask with no cells: named, not called a binary mask
    scored on connected components; the AP lines go 0.75 then 0.9, headline last."""
    data = _dataset(tmp_path / "d")
    tifffile.imwrite(data / "masks" / "im1.tif", np.zeros((64, 64), np.uint16))
    code, out, err = _run(capsys, "evaluate", model_path, data)
    assert code == 0, err
    assert "im1: the mask has no cells (AP is 1 if the prediction has none, else 0)" in err
    assert "im0" not in err and "im2" not in err
    assert "connected components" not in out + err
    lines = out.strip().splitlines()
    assert lines[-4].startswith("AP@0.75 (mean over images): ")
    assert lines[-3].startswith("AP@0.9 (mean over images): ")
    assert lines[-2].startswith("foreground jaccard (mean over images): ")
    assert lines[-1].startswith("AP@0.5 (mean over images): ")
    code, js, _ = _run(capsys, "evaluate", model_path, data, "--json")
    d = json.loads(js)
    assert d["scored_on"] == ["instances"]
    assert d["notes"] == ["im1: the mask has no cells (AP is 1 if the prediction has none, else 0)"]


def _class_mask() -> np.ndarray:
    """Four separate squares: three of class 1, one of class 2 (a class mask)."""
    mask = np.zeros((64, 64), np.uint8)
    for y, x in ((4, 4), (4, 40), (40, 4)):
        mask[y : y + 12, x : x + 12] = 1
    mask[40:52, 40:52] = 2
    return mask


def test_evaluate_warns_when_an_instance_model_gets_class_masks_and_mask_mode_reads_them(
    model_path, tmp_path, capsys
):
    """A 0..2 mask read as instances is 2 giant cells: the image is named with what to do;
    --mask-mode classes (or binary) counts the connected components of the foreground."""
    data = _dataset(tmp_path / "d", n=2)
    tifffile.imwrite(data / "masks" / "im1.tif", _class_mask())
    code, out, err = _run(capsys, "evaluate", model_path, data)
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: im1: ")
    assert "class" in warnings[0] and "--mask-mode classes" in warnings[0]
    assert "true cells (total): 6" in out  # four discs in im0, 2 "cells" in im1
    from scipy import ndimage

    blobs = ndimage.label(tifffile.imread(data / "masks" / "im0.tif") > 0, np.ones((3, 3)))[1]
    for mode in ("classes", "binary"):
        code, out, err = _run(capsys, "evaluate", model_path, data, "--mask-mode", mode)
        assert code == 0, err
        warned = [ln for ln in err.splitlines() if ln.startswith("warning:")]
        # im0 is an instance mask (ids up to 28): read as classes, that is said
        assert warned == ([] if mode == "binary" else [
            "warning: im0: read as classes, it holds class ids up to 28: is it an instance "
            "mask (one id per cell)? (--mask-mode instances, or auto)"
        ])  # fmt: skip
        assert f"true cells (total): {blobs + 4}" in out  # im0's blobs + the 4 squares
        assert (
            f"note: masks read as {mode} (--mask-mode {mode}): true cells are the "
            "connected components of their foreground" in out
        )
    # instances: every id one cell, as asked (a 0/1 mask is then one cell)
    tifffile.imwrite(data / "masks" / "im1.tif", (_class_mask() > 0).astype(np.uint8))
    code, out, err = _run(capsys, "evaluate", model_path, data, "--mask-mode", "instances")
    assert code == 0, err
    assert "true cells (total): 5" in out and "warning:" not in err
    code, _, err = _run(capsys, "evaluate", model_path, data)  # auto: components, and why
    assert "warning: im1: the mask holds only 0 and 1, like a binary mask" in err


def test_evaluate_json_is_valid_when_every_image_fails(model_path, tmp_path, capsys):
    data = _dataset(tmp_path / "d", n=2)
    (data / "images" / "im0.tif").write_text("not a tiff")
    tifffile.imwrite(data / "masks" / "im1.tif", np.zeros((10, 10), np.uint8))
    code, out, err = _run(capsys, "evaluate", model_path, data, "--json")
    assert code == 2
    d = json.loads(out)
    assert d["n_images"] == 0 and d["images"] == []
    assert len(d["errors"]) == 2
    assert d["errors"][0].startswith(f"{data / 'images' / 'im0.tif'}: ")
    assert d["errors"][1].startswith(f"{data / 'masks' / 'im1.tif'}: mask is 10 x 10")
    assert len(_one_error_line(err).splitlines()) == 2  # and each said once on stderr


def test_cell_csvs_write_pixel_counts_as_integers_name_the_unit_and_match_the_windows(
    model_path, tmp_path, capsys, monkeypatch
):
    """cells_summary.csv named images "a.tif" from the CLI and "a" from the window, wrote
    mean_area with 13 decimals and area as "150.0": one function (export_cells) writes
    both, integer counts as integers, the rest to 4 decimals, sizes in pixels (_px)."""
    from cellseg_gui.core.model import bundle as bundle_mod
    from cellseg_gui.core.scores.measure import export_cells, measure_cells, write_csv

    img, _ = _blobs(0)
    tifffile.imwrite(tmp_path / "a.tif", img)
    cells = np.zeros(img.shape, np.int32)
    cells[5:15, 5:20] = 1  # 150 px
    cells[30:40, 30:36] = 2  # 60 px
    cells[50:57, 50] = 3  # 7 px: the mean area is 72.333...

    def fixed(self, raw, **kw):
        from cellseg_gui.core.model.predict import Prediction

        return cells.copy(), Prediction((cells > 0).astype(np.uint8), None)

    monkeypatch.setattr(bundle_mod._Predictor, "predict_cells", fixed)
    code, _, err = _run(
        capsys, "predict", model_path, tmp_path / "a.tif", "--out", tmp_path / "o",
        "--instances", "--measure",
    )  # fmt: skip
    assert code == 0, err
    per_cell = (tmp_path / "o" / "a_cells.csv").read_text().splitlines()
    header = per_cell[0].split(",")
    assert header[:2] == ["label", "area_px"] and "perimeter_px" in header
    first = dict(zip(header, per_cell[1].split(","), strict=True))
    assert first["area_px"] == "150" and first["bbox_max_x"] == "20"
    assert first["min_intensity"] == str(int(img[5:15, 5:20].min()))
    assert all(len(v.partition(".")[2]) <= 4 for k, v in first.items() if abs(float(v)) >= 1)
    # below 1, significant digits: a float image in small units keeps its values
    small = (img.astype(np.float32) * 1e-6)[5:15, 5:20]
    row = measure_cells(cells[5:15, 5:20], small)
    write_csv(tmp_path / "small.csv", row)
    got = dict(csv.DictReader(open(tmp_path / "small.csv")).__next__())
    assert float(got["mean_intensity"]) == pytest.approx(float(small.mean()), rel=1e-5)
    summary = (tmp_path / "o" / "cells_summary.csv").read_text()
    assert summary == (
        "image,cells,mean_area_px,median_area_px,total_area_px\na.tif,3,72.3333,60.0,217\n"
    )
    # the window's export (app.cell_export) calls the same function with the file name
    row, _ = export_cells(tmp_path / "w", "a", cells, img, rois=False, image_name="a.tif")
    write_csv(tmp_path / "w" / "cells_summary.csv", [row])
    assert (tmp_path / "w" / "cells_summary.csv").read_text() == summary
    assert (tmp_path / "w" / "a_cells.csv").read_text().splitlines() == per_cell


def test_evaluate_says_when_a_model_records_no_training_images(model_path, tmp_path, capsys):
    """A bundle made before images were recorded cannot tell which it trained on: evaluate
    says so, and --json gives null rather than an empty list ("none of them")."""
    data = _dataset(tmp_path / "d", n=1)
    code, js, err = _run(capsys, "evaluate", model_path, data, "--json")
    assert code == 0, err
    assert json.loads(js)["trained_on"] is None
    assert "note: the model records no training images" in err


def test_a_stopped_mixed_precision_run_does_not_claim_an_fp32_rescore(
    tmp_path, capsys, monkeypatch
):
    """A stopped run ends at once, its figures left as the epoch lines had them (under
    bf16 here): the end of train said 'scored again in fp32' all the same."""
    import cellseg_gui.core.training.train as train_mod
    from cellseg_gui.core.events import EpochEnded

    real = train_mod.fit

    def stopped_after_two_epochs(*args, **kw):
        seen = 0
        for ev in real(*args, **kw):
            yield ev
            if isinstance(ev, EpochEnded):
                seen += 1
                if seen == 2:
                    kw["cancel"].cancel()

    monkeypatch.setattr(train_mod, "fit", stopped_after_two_epochs)
    data = _dataset(tmp_path / "d", n=4)
    code, out, err = _run(
        capsys, "train", data, "--out", tmp_path / "m.cellseg", "--epochs", "5",
        "--steps-per-epoch", "2", "--val", "im2,im3", "--amp", "bf16", *TINY,
    )  # fmt: skip
    model_line = next(ln for ln in out.splitlines() if ln.startswith("model: "))
    assert "validation foreground Jaccard" in model_line
    assert "scored again in fp32" not in model_line, (code, model_line)
    # a run to its end under bf16 does say it (the figures are fp32 ones then)
    code, out, err = _run(
        capsys, "train", data, "--out", tmp_path / "n.cellseg", "--epochs", "1",
        "--steps-per-epoch", "2", "--val", "im2,im3", "--amp", "bf16", *TINY,
    )  # fmt: skip
    assert code == 0, err
    assert "scored again in fp32" in next(ln for ln in out.splitlines() if ln.startswith("model: "))


def test_a_prediction_that_cannot_be_written_is_a_line_and_the_rest_go_on(
    model_path, tmp_path, capsys
):
    """A write that fails (here a folder stands where the mask goes; a full disk fails
    the same way) names the file; the next image is still written."""
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{name}.tif", _blobs(0)[0])
    (tmp_path / "o" / "a.tif").mkdir(parents=True)
    code, out, err = _run(capsys, "predict", model_path, tmp_path / "a.tif", tmp_path / "b.tif",
                          "--out", tmp_path / "o", "--instances")  # fmt: skip
    assert code == 2
    assert f"{tmp_path / 'o' / 'a.tif'}: " in err and "Traceback" not in err
    assert tifffile.imread(tmp_path / "o" / "b.tif").dtype == np.uint16


def test_predict_never_replaces_an_input_image_or_a_hand_drawn_mask(model_path, tmp_path, capsys):
    """`--out` on the images' own folder replaced each raw image with its labels, and
    `--out` on a data set's masks folder would have replaced the ground truth (found by a
    helper trying the CLI). Now an input is never replaced, a file that predict did not
    write only with --overwrite, and a mask predict wrote is replaced on a second run."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    img, inst = _blobs(0)
    tifffile.imwrite(data / "images" / "a.tif", img)
    tifffile.imwrite(data / "masks" / "a.tif", inst)
    raw, truth = (data / "images" / "a.tif").read_bytes(), (data / "masks" / "a.tif").read_bytes()
    code, out, err = _run(capsys, "predict", model_path, data / "images", "--out",
                          data / "images", "--instances")  # fmt: skip
    assert code == 2 and f"{data / 'images' / 'a.tif'}: is in the folder of the input" in err
    code, out, err = _run(capsys, "predict", model_path, data, "--out", data / "masks")
    assert code == 2 and f"{data / 'masks' / 'a.tif'}: exists and is not a mask cellseg" in err
    assert "--overwrite" in err and "Traceback" not in err
    assert (data / "images" / "a.tif").read_bytes() == raw
    assert (data / "masks" / "a.tif").read_bytes() == truth
    # its own predictions are replaced on a second run, without asking
    for _ in range(2):
        code, out, err = _run(capsys, "predict", model_path, data, "--out", tmp_path / "o")
        assert code == 0, err
    # and --overwrite replaces a file predict did not write, never an input
    code, out, err = _run(capsys, "predict", model_path, data, "--out", data / "masks",
                          "--overwrite")  # fmt: skip
    assert code == 0, err
    assert (data / "masks" / "a.tif").read_bytes() != truth
    code, out, err = _run(capsys, "predict", model_path, data / "images", "--out",
                          data / "images", "--overwrite")  # fmt: skip
    assert code == 2 and (data / "images" / "a.tif").read_bytes() == raw
    # the same file under another name (a link; a case-insensitive disk is the same) is
    # the input, whatever the name
    (tmp_path / "linked").mkdir()
    os.link(data / "images" / "a.tif", tmp_path / "linked" / "a.tif")
    code, out, err = _run(capsys, "predict", model_path, data / "images" / "a.tif", "--out",
                          tmp_path / "linked", "--overwrite")  # fmt: skip
    assert code == 2 and "is an input image" in err
    assert (data / "images" / "a.tif").read_bytes() == raw
    # a hand-drawn mask of another type is not shadowed by a prediction beside it
    hand = tmp_path / "hand"
    hand.mkdir()
    tifffile.imwrite(hand / "a.tiff", inst)
    code, out, err = _run(capsys, "predict", model_path, data / "images", "--out", hand,
                          "--overwrite")  # fmt: skip
    assert code == 2 and "a.tiff is there already" in err
    assert sorted(p.name for p in hand.iterdir()) == ["a.tiff"]


def test_an_output_that_cannot_be_a_folder_is_refused_before_any_work(model_path, tmp_path, capsys):
    """`--out` naming a file, or a folder under one, was a traceback from predict, lr-find
    and export, and train failed only after its whole run. Each now says which path and
    why, exit 2, before any work."""
    tifffile.imwrite(tmp_path / "a.tif", _blobs(0)[0])
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for target, why in ((afile, "is a file, not a folder"),
                        (afile / "sub", "cannot create the output folder")):  # fmt: skip
        code, out, err = _run(capsys, "predict", model_path, tmp_path / "a.tif", "--out", target)
        assert code == 2 and f"{target}: {why}" in err and "Traceback" not in err
    code, out, err = _run(capsys, "export", model_path, "--format", "onnx", "--out",
                          afile / "x.onnx")  # fmt: skip
    assert code == 2 and f"{afile}: is a file, not a folder" in err
    code, out, err = _run(capsys, "train", tmp_path, "--out", afile / "m.cellseg",
                          "--epochs", "1")  # fmt: skip
    assert code == 2 and f"{afile}: is a file, not a folder" in err
    assert "Traceback" not in err


def test_a_file_given_twice_is_predicted_once_and_a_shared_name_keeps_its_path(
    model_path, tmp_path, capsys
):
    """The same file given twice made two summary rows of the same cells; two files of one
    name from two folders made two rows that could not be told apart."""
    for folder, seed in (("A", 0), ("B", 1)):
        (tmp_path / folder / "x").mkdir(parents=True)
        tifffile.imwrite(tmp_path / folder / "x" / "s.tif", _blobs(seed)[0])
    a, b = tmp_path / "A" / "x" / "s.tif", tmp_path / "B" / "x" / "s.tif"
    code, out, err = _run(capsys, "predict", model_path, a, a, b, "--out", tmp_path / "o",
                          "--instances", "--measure")  # fmt: skip
    assert code == 0, err
    assert f"note: {a}: given more than once, predicted once" in err
    rows = list(csv.DictReader(open(tmp_path / "o" / "cells_summary.csv")))
    assert [r["image"] for r in rows] == ["s.tif", str(b)]
    assert sorted(p.name for p in (tmp_path / "o").glob("*.tif")) == ["s.tif", "x_s.tif"]


def test_output_into_a_pipe_closed_early_is_no_traceback(model_path) -> None:
    """`cellseg info MODEL | head -3` sometimes ended in a BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "cellseg_gui.cli", "info", str(model_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # the reader leaves before the first line is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err and "Broken pipe" not in err
    assert proc.returncode == 0


def test_predict_says_when_it_used_one_plane_of_a_stack_or_guessed_nan_pixels(
    model_path, tmp_path, capsys
):
    """A two-channel stack whose first channel was empty gave 0 cells without a word
    (inspect said it, predict did not), and NaN pixels gave cells without one either."""
    img = _blobs(0)[0]
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([np.zeros_like(img), img]))
    nan = img.astype(np.float32)
    nan[::7, ::7] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    tifffile.imwrite(tmp_path / "plain.tif", img)
    code, out, err = _run(capsys, "predict", model_path, tmp_path, "--out", tmp_path / "o",
                          "--instances")  # fmt: skip
    assert code == 0, err
    assert f"note: {tmp_path / 'stack.tif'}: holds 2 planes" in err
    assert "only plane 0 is predicted" in err
    assert f"note: {tmp_path / 'nan.tif'}: 2.4% of its pixels are NaN or infinite" in err
    assert "plain.tif: " not in err


def test_info_on_a_bundle_that_records_little_prints_no_none(model_path, tmp_path, capsys):
    """A bundle without mask mode, boundary width or channels printed
    "masks: None (boundary width None), channels: None"."""
    import json
    import zipfile

    small = tmp_path / "small.cellseg"
    with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(small, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "cellseg.json":
                meta = json.loads(data)
                for key in ("mask_mode", "boundary_width", "channels"):
                    meta.pop(key, None)
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    code, out, err = _run(capsys, "info", small)
    assert code == 0, err
    assert "None" not in out
    assert "masks: not recorded, channels: grey (not recorded)" in out


def test_a_mask_mode_that_does_not_fit_the_masks_is_warned_about(tmp_path, capsys):
    """Binary 0/255 masks trained and scored as instances gave one "cell" over most of
    each image and AP@0.5 1.0 without a word; instance masks read as classes made a class
    per id. Both now get a warning naming the mask."""
    data = tmp_path / "d"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    img, inst = _blobs(0)
    tifffile.imwrite(data / "images" / "a.tif", img)
    binary = np.full(img.shape, 255, np.uint8)
    binary[:10] = 0  # one object over 84% of the image
    tifffile.imwrite(data / "masks" / "a.tif", binary)
    code, out, err = _run(capsys, "train", data, "--out", tmp_path / "m.cellseg", "--epochs",
                          "1", "--mask-mode", "instances")  # fmt: skip
    assert code == 0, err
    assert (
        f"warning: {data / 'masks' / 'a.tif'}: read as instances, its one object covers 84%" in err
    )
    code, out, err = _run(capsys, "evaluate", tmp_path / "m.cellseg", data, "--mask-mode",
                          "instances")  # fmt: skip
    assert "warning: a: read as instances, its one object covers 84%" in err
    many = np.zeros(img.shape, np.uint8)
    for i in range(25):  # an instance mask: 25 cells, ids 1..25
        many[2 * i : 2 * i + 1, :20] = i + 1
    tifffile.imwrite(data / "masks" / "a.tif", many)
    code, out, err = _run(capsys, "train", data, "--out", tmp_path / "c.cellseg", "--epochs",
                          "1", "--mask-mode", "classes")  # fmt: skip
    assert "read as classes, it holds class ids up to 25: is it an instance mask" in err


def test_a_model_is_listed_by_its_file_name_with_the_runs_own_beside_it(model_path, tmp_path):
    """A colleague's run "run3" saved as seed0.cellseg was listed as "run3" only."""
    import json
    import zipfile

    from cellseg_gui.core.model.bundle_meta import read_bundle_meta
    from cellseg_gui.core.model.model_registry import model_record

    assert read_bundle_meta(model_path)["name"] == "cellseg model"  # the default: no name
    assert model_record(model_path).name == "tiny"
    named = tmp_path / "seed0.cellseg"
    with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(named, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "cellseg.json":
                data = json.dumps({**json.loads(data), "name": "run3"}).encode()
            dst.writestr(item, data)
    assert model_record(named).name == "seed0 (run3)"


def test_training_on_images_too_small_for_the_network_is_bad_input(tmp_path, capsys):
    """Only 20x20 images: the message was clear but came from the failed run, exit 1;
    it is bad input (exit 2), said before anything runs."""
    data = tmp_path / "d"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(2):
        img, inst = _blobs(i, size=20)
        tifffile.imwrite(data / "images" / f"a{i}.tif", img)
        tifffile.imwrite(data / "masks" / f"a{i}.tif", inst)
    code, out, err = _run(capsys, "train", data, "--out", tmp_path / "m.cellseg", "--epochs", "1")
    assert code == 2
    assert f"error: {data}: 2 image(s) smaller than 32 pixels on a side" in err
    assert "and no other image remains" in err
    assert "a0 (20x20), a1 (20x20)" in err and not (tmp_path / "m.cellseg").exists()


def test_no_two_inputs_get_one_mask_file():
    """A renamed stem could meet a stem of its own ("b/x" became "b_x", which "c/b_x"
    already was), and three folders of one name gave two inputs one file."""
    from cellseg_gui.cli.predict import _targets

    inputs = [Path("c/b_x.tif"), Path("a/x.tif"), Path("b/x.tif"), Path("A/x/s.tif"),
              Path("B/x/s.tif"), Path("C/x/s.tif"), Path("d/Cell.tif"), Path("e/cell.tif")]  # fmt: skip
    names = [t.name.casefold() for t in _targets([], inputs, Path("o"), "tif").values()]
    assert len(set(names)) == len(inputs), names


def test_a_cell_in_pieces_or_with_a_hole_is_one_composite_roi_of_its_own_pixels(tmp_path):
    """A mask's cell in two pieces got a ROI of one piece (545 of a usiigaci cell's 1237
    px outside it), and a hole lay inside a cell's ROI: Fiji measured other pixels than
    the CSV. Such a cell is now a composite ROI whose even-odd fill is the cell."""
    import roifile
    from skimage.draw import polygon

    from cellseg_gui.core.scores.measure import write_rois

    cells = np.zeros((40, 60), np.int32)
    cells[5:20, 5:20] = 7
    cells[9:13, 9:13] = 0  # a hole
    cells[25:35, 40:55] = 7  # a second piece
    cells[2:8, 30:40] = 9  # a plain cell: a polygon as before
    assert write_rois(tmp_path / "r.zip", cells) == 2
    rois = {r.name: r for r in roifile.roiread(tmp_path / "r.zip")}
    assert rois["cell-0007"].composite and not rois["cell-0009"].composite
    for name, roi in rois.items():
        filled = np.zeros(cells.shape, bool)
        for xy in roi.coordinates(multi=True) if roi.composite else [roi.coordinates()]:
            inside = np.zeros(cells.shape, bool)  # pixel centres inside this edge
            inside[polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, cells.shape)] = True
            filled ^= inside
        assert np.array_equal(filled, cells == int(name[-4:])), name
