"""bioimage.io export: the package is valid for bioimageio.spec and its own test tensors
reproduce with both weight formats (what ilastik / deepImageJ users depend on)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="ONNX export needs onnx (cellseg-gui[onnx])")
pytest.importorskip("onnxruntime", reason="ONNX weights need onnxruntime (cellseg-gui[onnx])")
yaml = pytest.importorskip("yaml", reason="reading rdf.yaml needs PyYAML")

from cellseg_gui.core.config import ModelConfig, NormConfig  # noqa: E402
from cellseg_gui.core.export.bioimageio import (  # noqa: E402
    export_bioimageio,
    reproduce_test_tensors,
    synthetic_cells,
    validate_package,
)
from cellseg_gui.core.model import bundle as B  # noqa: E402
from cellseg_gui.core.model.unet import build_model  # noqa: E402


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    cfg = ModelConfig(in_channels=1, n_classes=3, hidden=4, depth=2)
    model = build_model(cfg)
    model.train()
    with torch.no_grad():  # non-default BN statistics must reach the exported weights
        model(torch.randn(2, 1, 32, 32) * 2 + 1)
    model.eval()
    meta = B.make_meta(
        cfg,
        mask_mode="instances",
        boundary_width=2,
        channels="grey",
        norm=NormConfig(low=2.0, high=99.0),
        metrics={"val_fg_jaccard": 0.71},
        name="tiny cells",
        postprocess={"marker_threshold": 0.7, "min_size": 30, "chosen": "tuned on 3 images"},
    )
    d = tmp_path_factory.mktemp("bio")
    B.save_bundle(d / "tiny.cellseg", model, meta)
    sample = synthetic_cells(150, seed=1)
    return export_bioimageio(d / "tiny.cellseg", d / "tiny-bioimageio", sample_image=sample)


def test_package_contents(package: Path) -> None:
    assert package.suffix == ".zip" and package.exists()
    with zipfile.ZipFile(package) as zf:
        names = set(zf.namelist())
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        x = np.load(io.BytesIO(zf.read("test_input.npy")))
        y = np.load(io.BytesIO(zf.read("test_output.npy")))
    assert {"rdf.yaml", "README.md", "cover.png", "weights.onnx"} <= names
    assert rdf["format_version"].startswith("0.5")
    assert set(rdf["weights"]) == {"torchscript", "onnx"}
    axes = rdf["inputs"][0]["axes"]
    assert [a.get("id", a["type"]) for a in axes] == ["batch", "channel", "y", "x"]
    assert axes[2]["size"] == {"min": 16, "step": 4}
    pre = rdf["inputs"][0]["preprocessing"][0]
    assert pre["id"] == "scale_range"
    assert (pre["kwargs"]["min_percentile"], pre["kwargs"]["max_percentile"]) == (2.0, 99.0)
    # 150 px cropped to a multiple of 2**depth; outputs are probabilities over 3 classes
    assert x.shape == (1, 1, 148, 148) and y.shape == (1, 3, 148, 148)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["background", "cell", "boundary"]
    # the cells' post-processing travels with the package, for tools that rebuild cells
    pp = rdf["config"]["cellseg_gui"]["postprocess"]
    assert (pp["marker_threshold"], pp["min_size"]) == (0.7, 30)
    with zipfile.ZipFile(package) as zf:
        readme = zf.read("README.md").decode()
    assert "probability is at least 0.7" in readme and "under 30 pixels" in readme


def test_test_tensors_reproduce(package: Path) -> None:
    diffs = reproduce_test_tensors(package)
    assert set(diffs) == {"torchscript", "onnx"}
    assert all(d < 1e-4 for d in diffs.values()), diffs


def test_validates_with_bioimageio_spec(package: Path) -> None:
    pytest.importorskip(
        "bioimageio.spec",
        reason="bioimageio.spec is not installed (pip install cellseg-gui[bioimageio])",
    )
    summary = validate_package(package)
    assert summary.status in ("passed", "valid-format"), summary.format()


def test_a_model_with_a_distance_output_exports_it_as_a_named_channel(tmp_path) -> None:
    """The distance plane is no class: it is named, described and reproduced, and the
    README says how cellseg turns it into cells."""
    torch.manual_seed(4)
    cfg = ModelConfig(in_channels=1, n_classes=3, hidden=4, depth=2, distance_head=True)
    model = build_model(cfg).eval()
    meta = B.make_meta(
        cfg, mask_mode="instances", boundary_width=2, channels="grey",
        norm=NormConfig(low=2.0, high=99.0), name="tiny distance",
        postprocess={"method": "learned", "marker_threshold": 0.5, "min_size": 20},
    )  # fmt: skip
    B.save_bundle(tmp_path / "d.cellseg", model, meta)
    pkg = export_bioimageio(
        tmp_path / "d.cellseg", tmp_path / "d-bio", sample_image=synthetic_cells(96, seed=2)
    )
    with zipfile.ZipFile(pkg) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        y = np.load(io.BytesIO(zf.read("test_output.npy")))
        readme = zf.read("README.md").decode()
    out = rdf["outputs"][0]
    assert out["axes"][1]["channel_names"] == ["background", "cell", "boundary", "distance"]
    assert "last channel is the predicted closeness to the cell's centre" in out["description"]
    assert y.shape[1] == 4
    np.testing.assert_allclose(y[:, :3].sum(axis=1), 1.0, atol=1e-5)
    assert ((y[:, 3] > 0) & (y[:, 3] < 1)).all()
    assert "*distance* is at least 0.5" in readme and "under 20 pixels" in readme
    assert all(d < 1e-4 for d in reproduce_test_tensors(pkg).values())


def test_a_model_with_flows_exports_them_as_two_named_channels(tmp_path) -> None:
    """The flow planes are no classes: they are named, described and reproduced, and
    the README says how cellseg follows them to cells."""
    torch.manual_seed(5)
    cfg = ModelConfig(in_channels=1, n_classes=3, hidden=4, depth=2, flow_head=True)
    model = build_model(cfg).eval()
    meta = B.make_meta(
        cfg, mask_mode="instances", boundary_width=2, channels="grey",
        norm=NormConfig(low=2.0, high=99.0), name="tiny flows",
        postprocess={"method": "flow", "marker_threshold": None, "min_size": 30, "sink_size": 12},
    )  # fmt: skip
    B.save_bundle(tmp_path / "f.cellseg", model, meta)
    pkg = export_bioimageio(
        tmp_path / "f.cellseg", tmp_path / "f-bio", sample_image=synthetic_cells(96, seed=2)
    )
    with zipfile.ZipFile(pkg) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        y = np.load(io.BytesIO(zf.read("test_output.npy")))
        readme = zf.read("README.md").decode()
    out = rdf["outputs"][0]
    names = ["background", "cell", "boundary", "flow_y", "flow_x"]
    assert out["axes"][1]["channel_names"] == names
    assert "last two channels are the predicted flow (y, x)" in out["description"]
    assert rdf["config"]["cellseg_gui"]["postprocess"]["sink_size"] == 12
    assert y.shape[1] == 5
    np.testing.assert_allclose(y[:, :3].sum(axis=1), 1.0, atol=1e-5)
    assert "follow the flows" in readme and "at least 3 paths end" in readme
    assert "under 30 pixels" in readme
    assert all(d < 1e-4 for d in reproduce_test_tensors(pkg).values())
