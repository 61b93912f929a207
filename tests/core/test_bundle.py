"""Bundles: round trip with identical predictions, cheap meta, clear errors for broken
files, and TorchScript/ONNX exports that predict like the bundle (or raise)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cellseg_gui.core.config import ModelConfig, NormConfig
from cellseg_gui.core.export import formats as F
from cellseg_gui.core.model import bundle as B
from cellseg_gui.core.model.unet import build_model


def _meta(cfg: ModelConfig, **kw) -> dict:
    return B.make_meta(
        cfg,
        mask_mode="instances",
        boundary_width=2,
        channels="grey",
        norm=NormConfig(low=2.0, high=99.0),
        training={"epochs": 3, "history": {"val_fg_jaccard": [np.float32(0.5), None]}},
        metrics={"val_fg_jaccard": 0.5},
        name="tiny",
        **kw,
    )


@pytest.fixture(
    scope="module",
    params=[(1, False), (2, False), (2, True), (2, "flows")],
    ids=["full-res", "downsample2", "distance-head", "flows"],
)
def saved(tmp_path_factory, request) -> tuple[Path, torch.nn.Module, dict]:
    """Every bundle test runs on a full-resolution model, on a half-resolution one
    (whose exports must keep the averaging and upsampling, and whose tiles are rounded to
    8 rather than 4), on one with a distance output (a fourth plane, not a class) and on
    one with flows (two planes more, unit vectors)."""
    torch.manual_seed(1)
    ds, head = request.param
    cfg = ModelConfig(
        in_channels=1, n_classes=3, hidden=4, depth=2, downsample=ds,
        distance_head=head is True, flow_head=head == "flows",
    )  # fmt: skip
    model = build_model(cfg)
    model.train()
    with torch.no_grad():  # non-default BN running stats must travel too
        model(torch.randn(2, 1, 32, 32) * 3 + 1)
    model.eval()
    meta = _meta(cfg)
    path = tmp_path_factory.mktemp("b") / "tiny.cellseg"
    B.save_bundle(path, model, meta)
    return path, model, meta


def _raw(h: int = 70, w: int = 90) -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.random((h, w)) * 4000 + 100).astype(np.uint16)


def test_zip_layout_and_meta(saved) -> None:
    path, _, meta = saved
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["cellseg.json", "weights.pt"]
    got = B.read_bundle_meta(path)
    assert got["format"] == "cellseg-bundle" and got["format_version"] == 1
    assert got["architecture"] == meta["architecture"]
    assert [c["name"] for c in got["classes"]] == ["background", "cell", "boundary"]
    assert got["classes"][1]["color"] == [46, 204, 113]
    assert got["normalization"]["low"] == 2.0
    assert set(got["versions"]) == {"cellseg_gui", "torch", "numpy", "python"}
    assert got["training"]["history"]["val_fg_jaccard"] == [0.5, None]


def test_load_gives_identical_predictions(saved) -> None:
    path, model, _ = saved
    b = B.load_bundle(path, "cpu")
    assert not b.model.training
    assert b.n_classes == 3 and len(b.classes) == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    raw = _raw()
    pred = b.predict(raw, tile=48)
    # Same as running the original model on the same preprocessing.
    from cellseg_gui.core.model.predict import predict_tiled

    ref = predict_tiled(model, b.preprocess(raw), tile=48)  # the tiles asked for
    # the classes' softmax and, with a distance output, its sigmoid as one plane more
    # that the class map leaves out
    assert pred.probs.shape[0] == model.cfg.n_outputs
    np.testing.assert_allclose(pred.probs[:3].sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, pred.probs[:3].argmax(axis=0))
    np.testing.assert_array_equal(pred.probs, ref.probs)
    np.testing.assert_array_equal(pred.labels, ref.labels)
    again = B.load_bundle(path, "cpu").predict(raw, tile=48)
    np.testing.assert_array_equal(again.probs, pred.probs)


def test_preprocess_uses_bundle_normalisation(saved) -> None:
    path, _, _ = saved
    b = B.load_bundle(path, "cpu")
    raw = _raw()
    x = b.preprocess(raw)
    assert x.shape == (1, 70, 90) and x.dtype == np.float32
    lo, hi = np.percentile(raw.astype(np.float64), [2.0, 99.0])
    np.testing.assert_allclose(x[0], (raw - lo) / (hi - lo), rtol=1e-4, atol=1e-4)
    rgb = np.stack([raw, raw, raw], axis=-1)  # colour input to a grey model
    assert b.preprocess(rgb).shape == (1, 70, 90)


def test_read_meta_does_not_load_torch(saved) -> None:
    path, _, meta = saved
    code = (
        "import sys\n"
        "from cellseg_gui.core.model.bundle_meta import read_bundle_meta\n"
        f"m = read_bundle_meta({str(path)!r})\n"
        "print(m['architecture']['hidden'], m['versions']['torch'], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4", torch.__version__, "False"]


@pytest.mark.parametrize(
    "key, value",
    [("hidden", 1_000_000_000), ("depth", 40), ("n_classes", 0), ("in_channels", "3"),
     ("downsample", -1), ("dropout", 2.0), ("flow_head", "yes"), ("distance_head", 1)],
)  # fmt: skip
def test_an_impossible_architecture_is_refused_when_read(saved, tmp_path, key, value) -> None:
    path, model, meta = saved
    bad = json.loads(json.dumps(meta))
    bad["architecture"][key] = value
    target = tmp_path / "crafted.cellseg"
    with zipfile.ZipFile(target, "w") as zf:
        zf.writestr("cellseg.json", json.dumps(bad))
        zf.writestr("weights.pt", b"")
    for read in (B.read_bundle_meta, B.load_bundle):
        with pytest.raises(B.BundleError, match=f"architecture.{key} is"):
            read(target)


def test_a_bundle_with_both_heads_is_refused_and_one_from_before_flows_has_none(
    saved, tmp_path
) -> None:
    path, model, meta = saved
    both = json.loads(json.dumps(meta))
    both["architecture"].update(distance_head=True, flow_head=True)
    target = tmp_path / "both.cellseg"
    with zipfile.ZipFile(target, "w") as zf:
        zf.writestr("cellseg.json", json.dumps(both))
        zf.writestr("weights.pt", b"")
    with pytest.raises(B.BundleError, match="both a distance output and flows"):
        B.read_bundle_meta(target)
    if meta["architecture"].get("flow_head"):
        return
    # a bundle written before flows existed names no flow_head: it loads as it was
    old = json.loads(json.dumps(meta))
    old["architecture"].pop("flow_head", None)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "old.cellseg", "w") as zf:
        zf.writestr("cellseg.json", json.dumps(old))
        zf.writestr("weights.pt", src.read("weights.pt"))
    b = B.load_bundle(tmp_path / "old.cellseg", "cpu")
    assert not b.model_config.flow_head and b.model_config.n_outputs == meta_outputs(meta)


def meta_outputs(meta: dict) -> int:
    return int(meta["architecture"]["n_classes"]) + int(bool(meta["architecture"]["distance_head"]))


def test_save_is_atomic_and_overwrites(saved, tmp_path) -> None:
    path, model, meta = saved
    target = tmp_path / "m.cellseg"
    target.write_bytes(b"old")
    B.save_bundle(target, model, meta)
    assert zipfile.is_zipfile(target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.cellseg"]  # no temp files left


@pytest.mark.parametrize(
    "kind, match",
    [
        ("missing", "not found"),
        ("empty", "0 bytes"),
        ("text", "not a cellseg bundle"),
        ("truncated", "not a cellseg bundle|cannot read|weights"),
        ("no_meta", "no cellseg.json"),
        ("bad_json", "not valid JSON"),
        ("wrong_format", "not a cellseg model"),
        ("newer", "newer"),
        ("bad_norm", "normalization.method is 'zscore'; a cellseg model has one of"),
        ("bad_percentiles", r"normalization.low \(99\) is not below normalization.high \(1\)"),
        ("bad_weights", "weights.pt is damaged"),
    ],
)
def test_broken_bundles_raise_bundle_error(saved, tmp_path, kind, match) -> None:
    good, _, meta = saved
    p = tmp_path / f"{kind}.cellseg"
    data = good.read_bytes()
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("hello, not a model")
    elif kind == "truncated":
        p.write_bytes(data[: len(data) // 2])
    else:
        files = {"cellseg.json": json.dumps(meta), "weights.pt": b"not a pickle"}
        if kind == "no_meta":
            del files["cellseg.json"]
        elif kind == "bad_json":
            files["cellseg.json"] = "{garbled"
        elif kind == "wrong_format":
            files["cellseg.json"] = json.dumps({**meta, "format": "something-else"})
        elif kind == "newer":
            files["cellseg.json"] = json.dumps({**meta, "format_version": 99})
        elif kind == "bad_norm":  # named at once, not blamed on each image predicted
            norm = {**meta.get("normalization", {}), "method": "zscore"}
            files["cellseg.json"] = json.dumps({**meta, "normalization": norm})
        elif kind == "bad_percentiles":
            norm = {**meta.get("normalization", {}), "low": 99, "high": 1}
            files["cellseg.json"] = json.dumps({**meta, "normalization": norm})
        if kind != "missing":
            with zipfile.ZipFile(p, "w") as zf:
                for name, content in files.items():
                    zf.writestr(name, content)
    with pytest.raises(B.BundleError, match=match) as info:
        if kind in ("bad_weights", "truncated"):
            B.load_bundle(p, "cpu")
        else:
            B.read_bundle_meta(p)
    assert str(info.value).startswith(f"{p}: ")
    assert info.value.path == str(p)
    assert isinstance(info.value, ValueError)
    with pytest.raises(B.BundleError):
        B.load_predictor(p, "cpu")


class _Payload:  # a pickled object other than tensors: what a hostile weights.pt holds
    def __reduce__(self):
        return (print, ("this ran",))


def test_weights_that_are_more_than_weights_are_refused_without_advice_to_run_them(
    saved, tmp_path, capsys
) -> None:
    """torch's own message for such a file suggests loading it with weights_only=False,
    which runs its code: the user is told only that it is damaged or more than weights."""
    import pickle

    good, _, meta = saved
    p = tmp_path / "hostile.cellseg"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("cellseg.json", json.dumps(meta))
        buf = io.BytesIO()
        torch.save({"w": torch.zeros(1), "x": _Payload()}, buf, pickle_module=pickle)
        zf.writestr("weights.pt", buf.getvalue())
    with pytest.raises(B.BundleError) as info:
        B.load_predictor(p, "cpu")
    text = str(info.value)
    assert text.startswith(f"{p}: weights.pt is damaged or holds more than plain weights")
    assert "weights_only" not in text and "False" not in text
    assert "this ran" not in capsys.readouterr().out


def test_a_checkpoint_or_a_bioimageio_package_is_named_for_what_it_is(saved, tmp_path) -> None:
    """Given to predict, a training checkpoint read "your checkpoint file is corrupted"
    and a bioimage.io package "file in archive is not in a subdirectory: rdf.yaml"."""
    ckpt = tmp_path / "run.ckpt"
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 3}, ckpt)
    with pytest.raises(B.BundleError, match="a training checkpoint.*--resume"):
        B.load_predictor(ckpt, "cpu")
    pkg = tmp_path / "model.zip"
    with zipfile.ZipFile(pkg, "w") as zf:
        zf.writestr("rdf.yaml", "format_version: 0.5.3\n")
        zf.writestr("weights_torchscript.pt", b"x")
    with pytest.raises(B.BundleError, match="a bioimage.io package.*cellseg export"):
        B.load_predictor(pkg, "cpu")


def test_a_bundle_from_before_downsample_runs_at_full_resolution(tmp_path) -> None:
    """Older bundles have no ``downsample`` in their architecture: that means 1 (how they
    were trained), never 0 (auto)."""
    torch.manual_seed(1)
    cfg = ModelConfig(in_channels=1, n_classes=3, hidden=4, depth=2, downsample=1)
    path = tmp_path / "new.cellseg"
    B.save_bundle(path, build_model(cfg).eval(), _meta(cfg))
    old = tmp_path / "old.cellseg"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == B.META_NAME:
                m = json.loads(data)
                del m["architecture"]["downsample"]
                data = json.dumps(m).encode()
            dst.writestr(item, data)
    b = B.load_bundle(old, "cpu")
    assert b.model_config.downsample == 1 and b.model.downsample == 1
    raw = _raw()
    np.testing.assert_allclose(
        b.predict(raw).probs, B.load_bundle(path, "cpu").predict(raw).probs, atol=1e-6
    )


def test_torchscript_export_roundtrip(saved, tmp_path) -> None:
    path, _, meta = saved
    b = B.load_bundle(path, "cpu")
    out = tmp_path / "m.pt"
    diff = F.export_torchscript(b, out)
    assert diff < 1e-4
    pred = B.load_predictor(out, "cpu")
    assert pred.meta["architecture"] == meta["architecture"]
    raw = _raw(61, 75)
    np.testing.assert_allclose(
        pred.predict(raw, tile=48).probs, b.predict(raw, tile=48).probs, atol=1e-5
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_onnx_export_roundtrip(saved, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    path, _, meta = saved
    out = tmp_path / "m.onnx"
    diff = F.export_onnx(path, out)  # a path works as well as a Bundle
    assert diff < 1e-4
    pred = B.load_predictor(out)
    assert pred.meta["classes"] == meta["classes"]
    b = B.load_bundle(path, "cpu")
    raw = _raw(61, 75)  # non-multiple size, several tiles of another size than exported
    got = pred.predict(raw, tile=48, overlap=16)
    ref = b.predict(raw, tile=48, overlap=16)
    assert np.abs(got.probs - ref.probs).max() < 1e-4
    assert (got.labels == ref.labels).mean() > 0.999


def test_export_mismatch_raises(saved, tmp_path, monkeypatch) -> None:
    path, _, _ = saved
    b = B.load_bundle(path, "cpu")
    real = F._verify

    def sabotaged(p, run, model):
        return real(p, lambda x: np.asarray(run(x)) + 1e-3, model)

    monkeypatch.setattr(F, "_verify", sabotaged)
    out = tmp_path / "bad.pt"
    with pytest.raises(B.ExportError, match="differs"):
        F.export_torchscript(b, out)
    assert not out.exists()  # a failed export leaves nothing behind
    assert list(tmp_path.iterdir()) == []


def test_load_predictor_on_bundle(saved) -> None:
    path, _, _ = saved
    pred = B.load_predictor(path, "cpu")
    assert isinstance(pred, B.Bundle)
    assert pred.predict(_raw(), return_probs=False).probs is None


def test_make_meta_checks_classes() -> None:
    cfg = ModelConfig(n_classes=2)
    meta = _meta(cfg)
    assert [c["name"] for c in meta["classes"]] == ["background", "cell"]
    with pytest.raises(ValueError):
        _meta(cfg, classes=B.default_classes("instances", 3))
    assert B.default_classes("binary", 2)[1]["name"] == "foreground"
    assert len(B.default_classes("classes", 12)) == 12
