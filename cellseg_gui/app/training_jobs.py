"""The jobs the Training panel runs, as zero-argument generator factories, plus the small
model card and the ranking the noisy-labels list shows.

No Qt here: every factory is called inside the worker thread, so the engine (and torch)
load there, never on the GUI thread. The project's split, settings and model registry
live in core (``Project``, ``core.model.model_registry``), shared with the CLI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.data.project import ImagePair
from cellseg_gui.core.events import DONE, FAILED, Event, Finished, Message, Started
from cellseg_gui.core.jobs import CancelToken, JobFactory
from cellseg_gui.core.model.scoring import shown_metrics


def device_probe_job() -> JobFactory:
    """Load torch in the worker and name the device "auto" would pick, so the form's
    defaults fit it (and torch is warm before the first Train click)."""

    def run() -> Iterator[Event]:
        from cellseg_gui.core.model.predict import select_device

        dev = select_device("auto")
        yield Finished(DONE, result={"device_type": dev.type, "device": str(dev)})

    return run


def _load(pairs: list[ImagePair], cfg: TrainConfig) -> Iterator[Event]:
    """Load the snapshot of images and masks; bad files become warnings, not failures."""
    from cellseg_gui.core.data.dataset import load_samples

    samples, errors = load_samples(
        [p for p in pairs if p.mask_path],
        mask_mode=cfg.mask_mode,
        boundary_width=cfg.boundary_width,
        norm=cfg.norm,
        channels=cfg.channels,
    )
    for err in errors[:5]:
        yield Message(f"skipped {err}", "warning")
    if len(errors) > 5:
        yield Message(f"skipped {len(errors) - 5} more unreadable files", "warning")
    if samples:
        cfg.model.in_channels = int(samples[0].image.shape[0])
        cfg.model.n_classes = int(max(s.n_classes for s in samples))
        resolved = samples[0].mask_mode
        if cfg.mask_mode == "auto" and resolved:
            cfg.mask_mode = resolved  # so the bundle records what the masks really were
    return samples


def fit_job(pairs: list[ImagePair], cfg: TrainConfig, token: CancelToken, **kw: Any) -> JobFactory:
    def run() -> Iterator[Event]:
        samples = yield from _load(pairs, cfg)
        if not samples:
            yield Finished(
                FAILED,
                "No image with a mask to train on.",
                "Add masks, or check that mask files match image names.",
            )
            return
        from cellseg_gui.core.training.train import fit

        if kw.get("mask_mode", "auto") == "auto":
            kw["mask_mode"] = cfg.mask_mode
        if kw.get("classes") and len(kw["classes"]) != cfg.model.n_classes:
            kw.pop("classes")  # the project's class list does not fit these masks: defaults
        yield from fit(samples, cfg, cancel=token, **kw)

    return run


def lr_job(pairs: list[ImagePair], cfg: TrainConfig, token: CancelToken) -> JobFactory:
    def run() -> Iterator[Event]:
        samples = yield from _load(pairs, cfg)
        if not samples:
            yield Finished(FAILED, "No image with a mask for the learning-rate sweep.")
            return
        from cellseg_gui.core.training.lrfind import lr_find

        yield from lr_find(samples, cfg, cancel=token)

    return run


def overfit_job(
    pair: ImagePair, cfg: TrainConfig, token: CancelToken, max_steps: int = 600
) -> JobFactory:
    def run() -> Iterator[Event]:
        samples = yield from _load([pair], cfg)
        if not samples:
            yield Finished(FAILED, f"{pair.name} has no readable mask to overfit.")
            return
        from cellseg_gui.core.training.overfit import overfit_check

        yield from overfit_check(samples[0], cfg, cancel=token, max_steps=max_steps)

    return run


def predict_job(
    bundle_path: str | Path, pairs: list[ImagePair], token: CancelToken, tile: int | None = None
) -> JobFactory:
    """Predict images one by one with a bundle (``core.model.batch``, the job ``cellseg predict``
    runs): per-image foreground Jaccard and cell AP where a mask exists; an error on one
    image is reported in its event and the rest go on."""

    def run() -> Iterator[Event]:
        from cellseg_gui.core.model.batch import predict_batch
        from cellseg_gui.core.model.bundle import load_bundle

        yield from predict_batch(load_bundle(bundle_path), pairs, cancel=token, tile=tile)

    return run


def export_job(bundle_path: str | Path, paths: dict[str, Path]) -> JobFactory:
    """Write the chosen formats (each checked against the torch model by
    core.export.formats) and the model card beside them."""

    def run() -> Iterator[Event]:
        import shutil

        from cellseg_gui.core.export.formats import export_onnx, export_torchscript
        from cellseg_gui.core.model import bundle as B

        b = B.load_bundle(bundle_path, device="cpu")
        yield Started(job="export", device="cpu", precision="fp32", total_steps=len(paths))
        written = []
        for fmt, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "bundle":
                if Path(path).resolve() != Path(bundle_path).resolve():
                    shutil.copyfile(bundle_path, path)
            elif fmt == "torchscript":
                export_torchscript(b, path)
            elif fmt == "onnx":
                export_onnx(b, path)
            elif fmt == "bioimageio":
                from cellseg_gui.core.export.bioimageio import export_bioimageio

                path = export_bioimageio(b, path)
            elif fmt == "card":
                Path(path).write_text(
                    model_card(b.meta, {k: v for k, v in paths.items() if k != "card"})
                )
            written.append(str(path))
            yield Message(f"wrote {path}")
        yield Finished(
            DONE, "Exported: " + ", ".join(Path(p).name for p in written), result={"paths": written}
        )

    return run


def model_card(meta: dict[str, Any], files: dict[str, Path] | None = None) -> str:
    """A short markdown model card: what the model is, what it learned from, how well."""
    tr = meta.get("training") or {}
    settings = tr.get("settings") or {}
    split = tr.get("split") or {}
    metrics = shown_metrics(meta)
    arch = meta.get("architecture") or {}
    lines = [
        f"# Model card: {meta.get('name', 'cellseg model')}",
        "",
        f"Created {meta.get('created', '?')} with cellseg_gui {meta.get('versions', {}).get('cellseg_gui', '?')}.",
        "",
        "## Model",
        f"- U-Net, hidden {arch.get('hidden')}, depth {arch.get('depth')}, downsample {arch.get('downsample', 1)}, dropout {arch.get('dropout')}, "
        f"{arch.get('in_channels')} input channel(s), {arch.get('n_classes')} classes",
        f"- Classes: {', '.join(c.get('name', '?') for c in meta.get('classes', []))}",
        f"- Masks: {meta.get('mask_mode')} (boundary width {meta.get('boundary_width')}); channels: {meta.get('channels')}",
        f"- Normalisation: {json.dumps(meta.get('normalization'))}",
        "",
        "## Data",
        f"- Training images: {len(split.get('train', []))}; validation images: {len(split.get('val', []))}",
    ]
    if split.get("val"):
        lines.append(f"- Validation: {', '.join(split['val'][:20])}")
    lines += ["", "## Settings"]
    for key in (
        "crop",
        "batch_size",
        "optimizer",
        "lr",
        "weight_decay",
        "schedule",
        "epochs",
        "patience",
    ):
        if key in settings:
            lines.append(f"- {key}: {settings[key]}")
    aug = [k for k, v in (settings.get("augment") or {}).items() if v]
    lines.append(f"- augmentation: {', '.join(aug) or 'none'}")
    lines += ["", "## Metrics"]
    for key, value in metrics.items():
        lines.append(f"- {key}: {value}")
    if files:
        lines += ["", "## Files", *[f"- {k}: `{Path(p).name}`" for k, p in files.items()]]
        lines += ["", "Use: `cellseg predict MODEL IMAGES... --out FOLDER`"]
    lines.append("")
    return "\n".join(lines)


def rank_losses(losses: dict[str, float]) -> list[tuple[str, float, bool]]:
    """Images by loss, worst first, outliers flagged: diagnostics.noisy_labels, or a
    median + 3 MAD rule while that module is unavailable."""
    try:
        from cellseg_gui.core.training.diagnostics import noisy_labels
    except ImportError:
        import numpy as np

        vals = np.array(list(losses.values()), float)
        med = float(np.median(vals)) if vals.size else 0.0
        mad = float(np.median(np.abs(vals - med))) if vals.size else 0.0
        cut = med + 3 * 1.4826 * max(mad, 1e-12)
        ranked = sorted(losses.items(), key=lambda kv: -kv[1])
        return [(n, float(v), bool(len(vals) >= 3 and v > cut)) for n, v in ranked]
    return [(str(n), float(v), bool(o)) for n, v, o in noisy_labels(losses)]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
