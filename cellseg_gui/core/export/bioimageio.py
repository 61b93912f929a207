"""Export a ``.cellseg`` bundle as a bioimage.io model package (a zip with ``rdf.yaml``).

Why: ilastik, deepImageJ, QuPath and bioimageio.core run such packages without our code.
The package carries TorchScript and ONNX weights of the model *with a softmax on top*
(bioimage.io consumers expect probabilities, our bundles produce logits), the bundle's
per-image percentile normalisation as a ``scale_range`` preprocessing step, a test input
(raw image, before preprocessing) and the matching test output (probabilities), a cover
made from the image with its prediction over it, and documentation.

Writing the package needs only torch, numpy, Pillow, PyYAML and onnx; validating it needs
the optional ``bioimageio.spec`` (``pip install cellseg-gui[bioimageio]``), see
:func:`validate_package`.
"""

from __future__ import annotations

import copy
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellseg_gui.core.config import NormConfig
from cellseg_gui.core.data.fileio import atomic_file
from cellseg_gui.core.export.bioimageio_rdf import (  # noqa: F401  (re-exported)
    DEFAULT_AUTHORS,
    FORMAT_VERSION,
    INPUT_ID,
    OUTPUT_ID,
    TOLERANCE,
    UNET_CITATION,
    _documentation,
    _dump_yaml,
    build_rdf,
)
from cellseg_gui.core.export.formats import onnx_bytes
from cellseg_gui.core.model.bundle import Bundle, ExportError, load_bundle
from cellseg_gui.core.model.distance import outputs_to_probs

TEST_SIZE = 256  # largest side of the test tensors: enough context, small package


class _Probabilities(nn.Module):
    """The bundle's U-Net followed by a softmax over classes (what consumers display)
    and, for a model with a distance output, its sigmoid as one last channel; for one with
    flows, the two flow channels (unit vectors)."""

    def __init__(self, net: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.net = net
        self.n_classes = int(n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return outputs_to_probs(self.net(x), self.n_classes)


def synthetic_cells(size: int = 192, seed: int = 0) -> np.ndarray:
    """A deterministic phase-contrast-like uint16 image of round cells, for packages
    exported without a sample image (the test tensors then still exercise the model)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.full((size, size), 300.0, np.float32)
    for _ in range(max(4, size // 24)):
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        r = rng.uniform(0.05, 0.11) * size
        d = np.hypot(yy - cy, xx - cx) / r
        img += 900.0 * np.clip(1.2 - d, 0.0, 1.0) ** 0.5
    img += rng.normal(0.0, 40.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 65535).astype(np.uint16)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _tif_bytes(arr: np.ndarray) -> bytes:
    """Sample tensors: the test tensors as TIFF, which viewers (and the website) open."""
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    return buf.getvalue()


def _load_sample(sample_image: Any, bundle: Bundle) -> np.ndarray:
    if sample_image is None:
        return synthetic_cells()
    if isinstance(sample_image, np.ndarray):
        return sample_image
    from cellseg_gui.core.data.imageio import read_image

    channels = "keep" if bundle.model_config.in_channels > 1 else "grey"
    return read_image(Path(sample_image), channels=channels)


def _raw_chw(raw: np.ndarray, in_channels: int) -> np.ndarray:
    """Raw image as float32 (C, H, W) before normalisation: the package's input space."""
    arr = np.asarray(raw, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        if arr.shape[-1] == in_channels or (in_channels == 1 and arr.shape[-1] in (3, 4)):
            arr = np.moveaxis(arr, -1, 0)
        if in_channels == 1 and arr.shape[0] in (3, 4):
            arr = arr[:3].mean(axis=0, keepdims=True)
    if arr.shape[0] != in_channels:
        raise ValueError(f"the model expects {in_channels} channel(s), the sample has {arr.shape}")
    return np.nan_to_num(arr, nan=0.0)


def _crop(chw: np.ndarray, step: int) -> np.ndarray:
    """Centre crop to at most TEST_SIZE and to a multiple of ``step`` (a valid size)."""
    _, h, w = chw.shape
    th = min(h, TEST_SIZE) // step * step
    tw = min(w, TEST_SIZE) // step * step
    if th < step or tw < step:
        raise ValueError(f"the sample image {h}x{w} is smaller than the model's step {step}")
    y0, x0 = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(chw[:, y0 : y0 + th, x0 : x0 + tw])


def _scale_range(chw: np.ndarray, norm: NormConfig) -> np.ndarray:
    """The preprocessing as consumers run it (for the test output): percentiles per
    channel with the 1e-6 epsilon of bioimage.io's scale_range."""
    method = (norm.method or "percentile").lower()
    if method == "none":
        return chw.astype(np.float32)
    low, high = (0.0, 100.0) if method == "minmax" else (norm.low, norm.high)
    out = np.empty_like(chw, dtype=np.float32)
    for c in range(chw.shape[0]):
        lo, hi = np.percentile(chw[c], [low, high])
        out[c] = (chw[c] - lo) / (hi - lo + 1e-6)
    return out


def _cover_png(raw: np.ndarray, labels: np.ndarray, colors: list[list[int]]) -> bytes:
    """2:1 cover: the image on the left, the same image with the prediction over it on
    the right (the aspect ratio the bioimage.io website shows best)."""
    from PIL import Image

    grey = raw[0] if raw.ndim == 3 else raw
    lo, hi = np.percentile(grey, [0.5, 99.5])
    g = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    g8 = (g * 255).astype(np.uint8)
    rgb = np.repeat(g8[..., None], 3, axis=2).astype(np.float32)
    palette = np.zeros((256, 3), np.float32)
    for i, col in enumerate(colors[:256]):
        palette[i] = col[:3]
    over = rgb.copy()
    fg = labels > 0
    over[fg] = 0.45 * rgb[fg] + 0.55 * palette[labels[fg]]
    both = np.concatenate([rgb, over], axis=1).astype(np.uint8)
    img = Image.fromarray(both, "RGB")
    h, w = both.shape[:2]
    if h < 256:  # the website shows covers at a few hundred pixels: no tiny thumbnails
        scale = int(np.ceil(256 / h))
        img = img.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _torchscript_bytes(model: nn.Module) -> bytes:
    scripted = torch.jit.script(model)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    return buf.getvalue()


def _onnx_bytes(model: nn.Module, in_channels: int, opset: int) -> bytes:
    return onnx_bytes(
        model, in_channels, opset=opset, input_name=INPUT_ID, output_name=OUTPUT_ID,
        axis_names=("y", "x"),
    )  # fmt: skip


def run_torchscript(data: bytes, x: np.ndarray) -> np.ndarray:
    """Run TorchScript weights (bytes) on a (N, C, H, W) float32 array, as consumers do."""
    module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def run_onnx(data: bytes, x: np.ndarray) -> np.ndarray:
    """Run ONNX weights (bytes) on a (N, C, H, W) float32 array with onnxruntime."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x)})[0]


def export_bioimageio(
    bundle_path: str | os.PathLike[str] | Bundle,
    out_path: str | os.PathLike[str],
    *,
    sample_image: Any = None,
    authors: list[dict[str, str]] | None = None,
    license: str = "MIT",
    name: str | None = None,
) -> Path:
    """Write a bioimage.io model package (zip) for a ``.cellseg`` bundle; returns its path.

    ``sample_image`` (a path or raw array; default a synthetic cell image) becomes the
    test input and the cover. Both weight formats are checked against the torch model on
    the test input before the zip is published atomically; a mismatch raises ExportError.
    """
    out = Path(out_path)
    if out.suffix.lower() != ".zip":
        out = out.with_name(out.name + ".zip")
    bundle = bundle_path if isinstance(bundle_path, Bundle) else load_bundle(bundle_path, "cpu")
    meta = bundle.meta
    cfg = bundle.model_config
    norm = NormConfig.from_dict(meta.get("normalization"))
    step = cfg.size_multiple

    raw = _crop(_raw_chw(_load_sample(sample_image, bundle), cfg.in_channels), step)
    test_in = raw[None].astype(np.float32)
    model = _Probabilities(copy.deepcopy(bundle.model).to("cpu").eval(), cfg.n_classes).eval()
    with torch.inference_mode():
        test_out = model(torch.from_numpy(_scale_range(raw, norm)[None])).numpy()

    try:
        ts = _torchscript_bytes(model)
    except Exception as exc:
        raise ExportError(out, f"cannot script the model: {exc}") from None
    try:
        onnx_data = _onnx_bytes(model, cfg.in_channels, 17)
    except Exception as exc:
        raise ExportError(out, f"ONNX export failed: {str(exc).splitlines()[0]}") from None
    prepped = _scale_range(raw, norm)[None]
    for fmt, runner, data in (("TorchScript", run_torchscript, ts), ("ONNX", run_onnx, onnx_data)):
        diff = float(np.max(np.abs(runner(data, prepped) - test_out)))
        if not diff < TOLERANCE:
            raise ExportError(out, f"{fmt} weights differ from the model by {diff:.3g}")

    classes = list(meta.get("classes") or [])
    colors = [c.get("color", [255, 255, 255]) for c in classes] or [[0, 0, 0], [46, 204, 113]]
    files: dict[str, bytes] = {
        "test_input.npy": _npy_bytes(test_in),
        "test_output.npy": _npy_bytes(test_out.astype(np.float32)),
        "weights_torchscript.pt": ts,
        "weights.onnx": onnx_data,
        "sample_input.tif": _tif_bytes(test_in),
        "sample_output.tif": _tif_bytes(test_out.astype(np.float32)),
        "cover.png": _cover_png(raw, test_out[0].argmax(0).astype(np.uint8), colors),
        "README.md": _documentation(meta, classes or bundle.classes, norm).encode(),
    }
    rdf = build_rdf(
        meta, files, test_shape=test_in.shape, authors=authors, license=license, name=name
    )
    files = {"rdf.yaml": _dump_yaml(rdf).encode(), **files}

    with atomic_file(out) as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for fname, data in files.items():
            zf.writestr(fname, data)
    return out


def reproduce_test_tensors(package: str | os.PathLike[str]) -> dict[str, float]:
    """Run each weight format of a package on its own (preprocessed) test input and return
    the max abs difference to its test output, per format. Uses only the zip's content."""
    import yaml

    with zipfile.ZipFile(package) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        inp, outp = rdf["inputs"][0], rdf["outputs"][0]
        x = np.load(io.BytesIO(zf.read(inp["test_tensor"]["source"])))
        y = np.load(io.BytesIO(zf.read(outp["test_tensor"]["source"])))
        steps = inp.get("preprocessing") or []
        for step in steps:
            if step["id"] != "scale_range":
                raise ValueError(f"unsupported preprocessing {step['id']}")
            kw = step["kwargs"]
            lo = np.percentile(x, kw["min_percentile"], axis=(2, 3), keepdims=True)
            hi = np.percentile(x, kw["max_percentile"], axis=(2, 3), keepdims=True)
            x = ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)
        runners = {"torchscript": run_torchscript, "onnx": run_onnx}
        return {
            fmt: float(np.max(np.abs(runners[fmt](zf.read(w["source"]), x) - y)))
            for fmt, w in rdf["weights"].items()
            if fmt in runners
        }


def validate_package(package: str | os.PathLike[str], *, io_checks: bool = True) -> Any:
    """Validate with ``bioimageio.spec`` (optional dependency), offline: ``io_checks``
    hashes the local files against rdf.yaml. Returns the ValidationSummary; its
    ``status`` is "passed" (or "valid-format") when the package is valid."""
    from bioimageio.spec import load_description

    descr = load_description(Path(package), perform_io_checks=io_checks)
    return descr.validation_summary
