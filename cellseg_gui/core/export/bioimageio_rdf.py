"""The description of a bioimage.io model package: ``rdf.yaml`` (format 0.5) and the
README a user of ilastik, deepImageJ or QuPath reads, made from a bundle's record.
Text only: ``core.export.bioimageio`` builds the weights and test tensors and writes the zip.
"""

from __future__ import annotations

import json
from typing import Any

from cellseg_gui import __version__
from cellseg_gui.core.config import ModelConfig, NormConfig
from cellseg_gui.core.data.fileio import bytes_sha256
from cellseg_gui.core.model.bundle_meta import architecture

FORMAT_VERSION = "0.5.4"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
UNET_CITATION = {
    "text": "Ronneberger, Fischer & Brox. U-Net: Convolutional Networks for Biomedical "
    "Image Segmentation. MICCAI 2015.",
    "doi": "10.1007/978-3-319-24574-4_28",
}
DEFAULT_AUTHORS = [{"name": "cellseg_gui user"}]
TOLERANCE = 1e-4  # on probabilities in [0, 1]


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
    if cfg.distance_head:
        lines.append(
            f"| {len(classes)} | distance: sigmoid, how close each pixel lies to its cell's "
            "centre along the cell, 1 at the centre to 0 at the far end (not a class; leave "
            "it out of the argmax) |"
        )
    if cfg.flow_head:
        lines += [
            f"| {len(classes)} | flow y: the unit vector towards the cell's centre along the "
            "cell, its y component (not a class; leave it out of the argmax) |",
            f"| {len(classes) + 1} | flow x: the same vector's x component |",
        ]
    if meta.get("mask_mode") == "instances":
        from cellseg_gui.core.model.postprocess import SMOOTHING_SIGMA, postprocess_from_meta

        pp, _ = postprocess_from_meta(meta)
        lines += [
            "",
            "Cells were trained as *cell* with a *boundary* class between touching cells.",
        ]
        if pp.method == "flow":
            from cellseg_gui.core.model.flow import FOLLOW_MAX_STEPS, FOLLOW_STEPS, FOLLOW_STRIDE

            lines.append(
                "To get one id per cell as cellseg does (Cellpose's way): take the pixels "
                "whose most likely class is not background; from every "
                f"{FOLLOW_STRIDE}nd of them in each direction, follow the flows "
                f"{FOLLOW_STEPS} steps of one pixel (bilinear), or twice as many as the largest "
                "connected patch of those pixels is tall plus wide when that is more (at most "
                f"{FOLLOW_MAX_STEPS}); count where the paths end on "
                f"that {FOLLOW_STRIDE}x grid, sum the counts over 3x3, and seed a cell at each "
                f"5x5 peak where at least {pp.sink_size / FOLLOW_STRIDE**2:g} paths end; "
                "the end points join their seed by a watershed on the negated counts; each "
                "followed pixel takes its end point's cell, the pixels between them the "
                f"nearest one's (within {FOLLOW_STRIDE} px); finally drop cells under "
                f"{pp.min_size} pixels."
            )
        elif pp.method == "learned":
            lines.append(
                "To get one id per cell as cellseg does: markers are the 4-connected pixels "
                f"whose *distance* is at least {pp.marker_threshold:g} and whose most likely "
                "class is not background; grow them by a watershed on the negated distance "
                "through the pixels whose most likely class is not background; finally drop "
                f"cells under {pp.min_size} pixels."
            )
        elif pp.method == "distance":
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


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


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
                "description": "softmax probability per class"
                + (
                    "; the last channel is the predicted closeness to the cell's centre along "
                    "the cell (1 at the centre, its pixel farthest from the edge; falling to 0 "
                    "at the cell's far end and on the background)"
                    if cfg.distance_head
                    else "; the last two channels are the predicted flow (y, x): the network's "
                    "estimate of the unit vector towards the cell's centre along the cell "
                    "(trained to 0 on the background; not bounded)"
                    if cfg.flow_head
                    else ""
                ),
                "axes": [
                    {"type": "batch"},
                    {
                        "type": "channel",
                        "channel_names": _class_ids(classes)
                        + (["distance"] if cfg.distance_head else [])
                        + (["flow_y", "flow_x"] if cfg.flow_head else []),
                    },
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
                # probabilities in [0, 1]; the flow channels are vectors, about -1 to 1
                "data": {"type": "float32", "range": [None, None] if cfg.flow_head else [0.0, 1.0]},
            }
        ],
        "weights": {
            "torchscript": {
                **src("weights_torchscript.pt"),
                "pytorch_version": _torch_version(),
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
                # how cellseg turns the output into cells (core.model.postprocess)
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
