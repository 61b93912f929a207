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
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellseg_gui import __version__
from cellseg_gui.core.bundle import Bundle, ExportError, architecture, load_bundle, onnx_bytes
from cellseg_gui.core.config import ModelConfig, NormConfig
from cellseg_gui.core.fileio import atomic_file, bytes_sha256

FORMAT_VERSION = "0.5.4"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
TEST_SIZE = 256  # largest side of the test tensors: enough context, small package
UNET_CITATION = {
    "text": "Ronneberger, Fischer & Brox. U-Net: Convolutional Networks for Biomedical "
    "Image Segmentation. MICCAI 2015.",
    "doi": "10.1007/978-3-319-24574-4_28",
}
DEFAULT_AUTHORS = [{"name": "cellseg_gui user"}]
TOLERANCE = 1e-4  # on probabilities in [0, 1]


class _Probabilities(nn.Module):
    """The bundle's U-Net followed by a softmax over classes (what consumers display)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


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
    from cellseg_gui.core.imageio import read_image

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


def _preprocessing(norm: NormConfig) -> list[dict[str, Any]]:
    """bioimage.io steps equal to our normalisation: scale_range per sample, per channel
    (percentiles over y and x), i.e. ``(x - p_low) / (p_high - p_low)``."""
    method = (norm.method or "percentile").lower()
    if method == "none":
        return []
    low, high = (0.0, 100.0) if method == "minmax" else (float(norm.low), float(norm.high))
    return [
        {
            "id": "scale_range",
            "kwargs": {
                "axes": ["y", "x"],
                "min_percentile": low,
                "max_percentile": high,
            },
        }
    ]


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


def _documentation(meta: dict[str, Any], classes: list[dict[str, Any]], norm: NormConfig) -> str:
    cfg = architecture(meta)
    metrics = meta.get("metrics") or {}
    lines = [
        f"# {meta.get('name') or 'cellseg_gui U-Net'}",
        "",
        "A 2D U-Net for semantic segmentation of microscopy images, trained and exported "
        f"with cellseg_gui {__version__}.",
        "",
        "## Input",
        f"- {cfg.in_channels} channel(s), axes batch, channel, y, x; any size that is a "
        f"multiple of {cfg.size_multiple} (larger images: tile them).",
        f"- Preprocessing: per image and channel, the {norm.low:g} and {norm.high:g} "
        "percentiles are mapped to 0 and 1 (`scale_range`)."
        if (norm.method or "percentile").lower() == "percentile"
        else f"- Preprocessing: `{norm.method}`.",
        "",
        "## Output",
        "Softmax probabilities, one channel per class; the predicted class is the argmax.",
        "",
        "| channel | class |",
        "|---|---|",
    ]
    lines += [f"| {i} | {c.get('name', i)} |" for i, c in enumerate(classes)]
    if meta.get("mask_mode") == "instances":
        from cellseg_gui.core.postprocess import SMOOTHING_SIGMA, postprocess_from_meta

        pp, _ = postprocess_from_meta(meta)
        lines += [
            "",
            "Cells were trained as *cell* with a *boundary* class between touching cells.",
        ]
        if pp.method == "distance":
            lines.append(
                "To get one id per cell as cellseg does: the *cores* are the pixels whose "
                f"*cell* probability is at least {pp.marker_threshold:g} and whose most "
                "likely class is not background; take each core pixel's Euclidean distance "
                "to the nearest non-core pixel and smooth it (Gaussian, sigma "
                f"{SMOOTHING_SIGMA:g} px); markers are its h-maxima of height "
                f"{pp.peak_height:g} px (found on every second pixel, each repeated over its "
                "2x2 block); grow them by a watershed on the negated distance through the "
                "pixels whose most likely class is not background; finally drop cells under "
                f"{pp.min_size} pixels."
            )
        else:
            thr = (
                f"the pixels whose *cell* probability is at least {pp.marker_threshold:g}"
                if pp.marker_threshold is not None
                else "the pixels whose most likely class is *cell*"
            )
            lines.append(
                f"To get one id per cell as cellseg does: markers are {thr} (4-connected "
                f"components; those under {pp.min_size} pixels are dropped); grow them by a "
                "watershed on the *boundary* probability through the pixels whose most likely "
                "class is not background; foreground blobs that no marker reached become cells "
                f"of their own; finally drop cells under {pp.min_size} pixels."
            )
        lines[-1] += (
            f" These settings ({pp.chosen}) are in `config.cellseg_gui.postprocess` of rdf.yaml."
        )
    lines += [
        "",
        "## Architecture",
        f"U-Net, depth {cfg.depth}, {cfg.hidden} filters at the first level (doubling each "
        f"level), batch norm {'on' if cfg.batchnorm else 'off'}, dropout {cfg.dropout:g}"
        + (
            f", run on the input averaged over {cfg.downsample}x{cfg.downsample} blocks with "
            "its logits upsampled bilinearly."
            if cfg.downsample > 1
            else "."
        ),
    ]
    if metrics:
        lines += ["", "## Validation metrics (as recorded at training)", ""]
        lines += [f"- {k}: {v}" for k, v in metrics.items() if not isinstance(v, (dict, list))]
    lines += [
        "",
        "## Use",
        "Open this package in ilastik (Neural Network Classification), deepImageJ, QuPath "
        "or bioimageio.core. In cellseg_gui, the original `.cellseg` bundle reproduces the "
        "training-time normalisation exactly.",
        "",
        "## Validation",
        "The package's test input and test output reproduce with both weight formats "
        f"(max abs difference below {TOLERANCE:g}).",
        "",
    ]
    return "\n".join(lines)


def _channel_names(cfg: ModelConfig) -> list[str]:
    return ["grey"] if cfg.in_channels == 1 else [f"channel{i}" for i in range(cfg.in_channels)]


def _class_ids(classes: list[dict[str, Any]]) -> list[str]:
    """Channel names must be identifiers: lower-case, no spaces, unique."""
    out: list[str] = []
    for i, c in enumerate(classes):
        name = "".join(ch if ch.isalnum() else "_" for ch in str(c.get("name", i)).lower())
        name = name.strip("_") or f"class{i}"
        if not name[0].isalpha():
            name = f"c{name}"
        while name in out:
            name = f"{name}_{i}"
        out.append(name)
    return out


def _title(name: str | None) -> str:
    """bioimage.io wants 5 to 128 characters of letters, digits, spaces and ``_-()``."""
    clean = "".join(ch if ch.isalnum() or ch in " _-()" else " " for ch in (name or ""))
    clean = " ".join(clean.split())
    if len(clean) < 5:
        clean = f"{clean} cellseg U-Net".strip()
    return clean[:128]


def build_rdf(
    meta: dict[str, Any],
    files: dict[str, bytes],
    *,
    test_shape: tuple[int, ...],
    authors: list[dict[str, str]] | None = None,
    license: str = "MIT",
    name: str | None = None,
) -> dict[str, Any]:
    """The ``rdf.yaml`` content (format 0.5) for the files about to be written."""
    cfg = architecture(meta)
    norm = NormConfig.from_dict(meta.get("normalization"))
    classes = list(meta.get("classes") or [])
    if len(classes) != cfg.n_classes:
        classes = [{"name": f"class{i}"} for i in range(cfg.n_classes)]
    step = cfg.size_multiple
    halo = step  # context the consumers' tiler should discard at tile borders
    min_size = 4 * step  # leaves a valid core after removing the halo on both sides

    def src(fname: str) -> dict[str, str]:
        return {"source": fname, "sha256": bytes_sha256(files[fname])}

    title = _title(name or meta.get("name"))
    return {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": title,
        "description": (
            f"2D U-Net segmenting microscopy images into {cfg.n_classes} classes "
            f"({', '.join(str(c.get('name')) for c in classes)}), exported from cellseg_gui."
        ),
        "authors": authors or DEFAULT_AUTHORS,
        "cite": [UNET_CITATION],
        "license": license,
        "tags": ["unet", "segmentation", "2d", "microscopy", "pytorch", "cellseg_gui"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "version": "0.1.0",
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "raw image; normalised by the preprocessing below",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": _channel_names(cfg)},
                    {"type": "space", "id": "y", "size": {"min": min_size, "step": step}},
                    {"type": "space", "id": "x", "size": {"min": min_size, "step": step}},
                ],
                "test_tensor": src("test_input.npy"),
                "sample_tensor": src("sample_input.tif"),
                "data": {"type": "float32"},
                "preprocessing": _preprocessing(norm),
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_ID,
                "description": "softmax probability per class",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": _class_ids(classes)},
                    {
                        "type": "space",
                        "id": "y",
                        "size": {"tensor_id": INPUT_ID, "axis_id": "y"},
                        "halo": halo,
                    },
                    {
                        "type": "space",
                        "id": "x",
                        "size": {"tensor_id": INPUT_ID, "axis_id": "x"},
                        "halo": halo,
                    },
                ],
                "test_tensor": src("test_output.npy"),
                "sample_tensor": src("sample_output.tif"),
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": {
            "torchscript": {
                **src("weights_torchscript.pt"),
                "pytorch_version": torch.__version__.split("+")[0],
            },
            "onnx": {
                **src("weights.onnx"),
                "opset_version": 17,
                "parent": "torchscript",
            },
        },
        "config": {
            "cellseg_gui": {
                "version": __version__,
                "test_shape": list(test_shape),
                "bundle_meta": json.loads(json.dumps(meta, default=str)),
                # how cellseg turns the output into cells (core.postprocess)
                "postprocess": json.loads(json.dumps(meta.get("postprocess"), default=str)),
            }
        },
    }


def _dump_yaml(data: dict[str, Any]) -> str:
    try:
        import yaml
    except ImportError:  # JSON is valid YAML 1.2: keeps the export free of extra deps
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


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
    model = _Probabilities(copy.deepcopy(bundle.model).to("cpu").eval()).eval()
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
