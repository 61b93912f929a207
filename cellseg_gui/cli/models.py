"""The model commands: evaluate, export and info (predict: ``cli.predict``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cellseg_gui.cli.common import (
    _check_finite,
    _existing,
    _find_pairs,
    _load_model,
    _writable_folder,
)
from cellseg_gui.cli.output import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    CLIError,
    Output,
    _expected_errors,
    _fmt,
    _one_line,
)


def cmd_evaluate(args: argparse.Namespace, out: Output) -> int:
    from cellseg_gui.core.data.imageio import read_image, read_mask, size_text
    from cellseg_gui.core.model.scoring import score_dataset, score_image

    predictor = _load_model(args.model, args.device)
    pairs = [p for p in _find_pairs(args.data) if p.mask_path]
    meta = predictor.meta
    n_classes = int(predictor.n_classes)
    mode = meta.get("mask_mode") or "auto"
    mask_mode = getattr(args, "mask_mode", None) or "auto"
    width = int(meta.get("boundary_width", 2))
    channels = meta.get("channels", "grey")
    pp, note = predictor.postprocess
    if note:
        out.err(f"note: {note}")
    errors: list[str] = []  # also in --json: a script learns what failed
    notes: list[str] = []  # per image, what the figures rest on
    scores = []
    for pair in pairs:
        try:
            raw = read_image(pair.image_path, channels=channels)
            _check_finite(raw, Path(pair.image_path))
            mask = read_mask(pair.mask_path)
            if mask.shape[:2] != raw.shape[:2]:
                raise CLIError(
                    pair.mask_path,
                    f"mask is {size_text(mask.shape)} but its image is "
                    f"{size_text(raw.shape)} (height x width)",
                )
            try:
                target, truth, source, used = _read_truth(mask, mode, mask_mode, width)
            except ValueError as exc:
                raise CLIError(pair.mask_path, _one_line(exc)) from None
            top = int(target.max()) if target.size else 0
            if top >= n_classes and used == "classes" and mode in ("classes", "auto"):
                raise CLIError(
                    pair.mask_path,
                    f"mask has class {top} but the model knows {n_classes} classes "
                    f"(0..{n_classes - 1})",
                )
            try:
                pred = predictor.predict(raw, tile=args.tile, tta=args.tta, return_probs=True)
            except ValueError as exc:
                raise CLIError(pair.image_path, _one_line(exc)) from None
        except _expected_errors() as exc:
            out.error(exc)
            errors.append(_one_line(exc))
            continue
        doubt = _doubt(pair.name, mask, mode, mask_mode)
        if doubt:
            out.err(f"warning: {doubt}")
            notes.append(doubt)
        model_mode = mode if mode != "auto" else used
        s = score_image(
            pair.name, pred.labels, pred.probs, target, truth, model_mode, pp, source=source
        )
        scores.append(s)
        if s.instances.n_true == 0:
            empty = (
                f"{pair.name}: the mask has no cells (AP is 1 if the prediction has none, else 0)"
            )
            out.err(f"note: {empty}")
            notes.append(empty)
        out.bar(len(scores) / len(pairs), f"evaluated {len(scores)} of {len(pairs)} image(s)")
    out.clear_bar()
    if not scores and not errors:
        problem = CLIError(args.data, "no images with masks to evaluate")
        out.error(problem)
        errors.append(_one_line(problem))
    if errors and scores:
        out.err(f"{len(errors)} image(s) could not be evaluated")
    seen = _trained_on(meta, [p for p in pairs if p.name in {s.name for s in scores}])
    if seen is None and scores:
        out.err(
            "note: the model records no training images: whether it trained on these is unknown"
        )
    if seen:
        shown = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "")
        out.err(
            f"warning: {len(seen)} of {len(scores)} image(s) were in this model's training "
            f"split ({shown}): their figures flatter it; score images it never trained on "
            "(cellseg train names its validation images)"
        )
    if args.json:
        d: dict[str, Any] = score_dataset(scores).to_dict() if scores else {"n_images": 0}
        d.setdefault("images", [])
        d["postprocess"] = pp.to_dict()
        d["mask_mode"] = mask_mode
        d["notes"] = notes
        d["errors"] = errors
        d["trained_on"] = seen
        out.out(json.dumps(d, indent=2))
    elif scores:
        for line in evaluation_lines(score_dataset(scores), pp, mask_mode=mask_mode):
            out.out(line)
    if not scores:
        return EXIT_BAD_INPUT
    return EXIT_BAD_INPUT if errors else EXIT_OK


def _trained_on(meta: dict[str, Any], pairs: list[Any]) -> list[str] | None:
    """The images among ``pairs`` the model trained on (``core.model.image_roles``, the
    window's answer too: the same name and file bytes as recorded), or None when its
    bundle records no images (older bundles: nothing can be said)."""
    from cellseg_gui.core.model.image_roles import model_roles

    paths = {p.name: p.image_path for p in pairs}
    roles = model_roles(meta, list(paths), paths.get)
    if roles is None:
        return None
    return [name for name in paths if roles.get(name) == "train"]


def _read_truth(mask: Any, model_mode: str, mask_mode: str, width: int) -> tuple[Any, ...]:
    """(classes for the foreground Jaccard, true cell ids, where the ids come from, the
    mode the classes were read in). ``auto`` reads masks as the model was trained on
    them; ``--mask-mode classes`` or ``binary`` scores cells on the connected components
    of the foreground; ``instances`` takes every id as one cell."""
    from cellseg_gui.core.data.masks import as_instances, mask_to_classes, truth_cells

    if mask_mode == "auto":
        target, _, used = mask_to_classes(mask, mode=model_mode, boundary_width=width)
        truth, source = truth_cells(mask, used)
    else:
        target, _, used = mask_to_classes(mask, mode=mask_mode, boundary_width=width)
        truth, source = as_instances(mask, mask_mode)
    return target, truth, source, used


def _doubt(name: str, mask: Any, model_mode: str, mask_mode: str) -> str | None:
    """Why an instance model's mask, read as it stands, may not give the cells: a mask
    holding only 0..2 (or 0..1) is more likely a class or binary one; a mask read in the
    mode the user chose that looks like another kind (``masks.mode_doubt``)."""
    if mask_mode in ("instances", "classes"):
        from cellseg_gui.core.data.masks import mode_doubt

        why = mode_doubt(mask, mask_mode)
        return f"{name}: {why}" if why else None
    if mask_mode != "auto" or model_mode != "instances":
        return None
    from cellseg_gui.core.data.masks import class_like_values

    values = class_like_values(mask)
    if not values:
        return None
    if values == (1,):
        return (
            f"{name}: the mask holds only 0 and 1, like a binary mask, not an instance mask "
            "(one id per cell): its cells are taken as its connected components, so "
            "touching cells count as one; give instance masks for true counts "
            "(--mask-mode binary says so and silences this)"
        )
    return (
        f"{name}: the mask holds only the values 0..{max(values)}, like a class or binary "
        "mask, but this model reads instance masks (one id per cell): read so, it has "
        f"{len(values)} cell(s), one per value. If it is a class or binary mask, run with "
        "--mask-mode classes (true cells: the connected components of its foreground); "
        "for true counts, give instance masks"
    )


def evaluation_lines(result: Any, pp: Any, *, mask_mode: str = "auto") -> list[str]:
    """The table and summary of ``cellseg evaluate``: one row per image, then one line
    per figure naming how it was combined; the last two are the headline figures."""
    summ = result.instances
    rows = [
        f"{'image':<28} {'fg jaccard':>10} {'AP@0.5':>7} {'AP@0.75':>7} "
        f"{'true':>6} {'pred':>6} {'merged':>6} {'split':>6}"
    ]
    for s in result.images:
        name = s.name if len(s.name) <= 28 else s.name[:25] + "..."
        i = s.instances
        rows.append(
            f"{name:<28} {s.fg_jaccard:>10.4f} {i.ap(0.5):>7.4f} {i.ap(0.75):>7.4f} "
            f"{i.n_true:>6} {i.n_pred:>6} {i.merged:>6} {i.split:>6}"
        )
    if mask_mode in ("classes", "binary"):
        rows.append(
            f"note: masks read as {mask_mode} (--mask-mode {mask_mode}): true cells are the "
            "connected components of their foreground"
        )
    elif summ.sources != ("instances",):
        rows.append("note: these are not instance masks; cells are their connected components")
    rows += [
        f"cells from the prediction: {pp.describe()}",
        f"true cells (total): {summ.n_true}",
        f"predicted cells (total): {summ.n_pred}",
        f"matched at IoU 0.5 (total): {summ.matched}",
        f"merged, one prediction over several true cells (total): {summ.merged}",
        f"split, one true cell in several predictions (total): {summ.split}",
        # pooled figures first, then the means, the headline two last (as the issue of
        # record asks); every figure --json gives is here too
        f"foreground jaccard (pooled over pixels): {result.fg_jaccard_pooled:.4f}",
        f"AP@0.5 (pooled over cells): {summ.ap(0.5, pooled=True):.4f}",
        f"AP@0.75 (pooled over cells): {summ.ap(0.75, pooled=True):.4f}",
        f"AP@0.9 (pooled over cells): {summ.ap(0.9, pooled=True):.4f}",
        f"AP@0.75 (mean over images): {summ.ap(0.75):.4f}",
        f"AP@0.9 (mean over images): {summ.ap(0.9):.4f}",
        f"foreground jaccard (mean over images): {result.fg_jaccard_mean:.4f}",
        f"AP@0.5 (mean over images): {summ.ap(0.5):.4f}",
    ]
    return rows


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from cellseg_gui.core.export.formats import export_onnx, export_torchscript
    from cellseg_gui.core.model.bundle import ExportError, load_bundle

    bundle = load_bundle(_existing(args.model), device="cpu")
    target = Path(args.out)
    _writable_folder(target.parent)
    written = target  # a bioimage.io package gets .zip added (export_bioimageio)
    if args.format == "bioimageio" and target.suffix.lower() != ".zip":
        written = target.with_name(target.name + ".zip")
    if written.is_dir():
        raise CLIError(written, "is a folder; --out names the file to write")
    try:
        if args.format == "torchscript":
            export_torchscript(bundle, target)
        elif args.format == "bioimageio":
            from cellseg_gui.core.export.bioimageio import export_bioimageio

            target = export_bioimageio(bundle, target, sample_image=args.sample)
        else:
            export_onnx(bundle, target)
    except ExportError as exc:
        out.error(exc)
        return EXIT_FAILED
    out.out(f"wrote {target} ({args.format}, checked against the torch model)")
    return EXIT_OK


def cmd_info(args: argparse.Namespace, out: Output) -> int:
    path = _existing(args.model)
    if path.suffix.lower() == ".cellseg":
        from cellseg_gui.core.model.bundle_meta import BundleError, read_bundle_meta

        try:
            meta = read_bundle_meta(path)
        except BundleError as exc:  # not in _expected_errors: info never imports bundle
            raise CLIError(exc.path, exc.problem) from None
    else:
        meta = _load_model(args.model, "cpu").meta
    if args.json:
        out.out(json.dumps(meta, indent=2, default=str))
        return EXIT_OK
    for line in describe_meta(meta, path):
        out.out(line)
    return EXIT_OK


def describe_meta(meta: dict[str, Any], path: Path | None = None) -> list[str]:
    """A model's record in plain lines (also useful for the window's model list)."""
    arch = meta.get("architecture") or {}
    lines = [f"model: {meta.get('name') or (path.name if path else '?')}"]
    if path is not None:
        size = path.stat().st_size
        shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
        lines.append(f"file: {path} ({shown})")
    lines.append(
        "architecture: U-Net, hidden {h}, depth {d}, downsample {s}, {c} input channel(s), "
        "{k} classes, dropout {p}, batch-norm {bn}".format(
            h=arch.get("hidden"),
            d=arch.get("depth"),
            s=arch.get("downsample") or 1,
            c=arch.get("in_channels"),
            k=arch.get("n_classes"),
            p=arch.get("dropout"),
            bn="on" if arch.get("batchnorm") else "off",
        )
        + (", a distance output" if arch.get("distance_head") is True else "")
        + (", flows" if arch.get("flow_head") is True else "")
    )
    classes = meta.get("classes") or []
    if classes:
        lines.append("classes: " + ", ".join(str(c.get("name")) for c in classes))
    mode, width = meta.get("mask_mode"), meta.get("boundary_width")
    masks = f"masks: {mode or 'not recorded'}"
    if mode == "instances" and width is not None:
        masks += f" (boundary width {width})"
    lines.append(f"{masks}, channels: {meta.get('channels') or 'grey (not recorded)'}")
    norm = meta.get("normalization") or {}
    if norm:
        lines.append(f"normalisation: {norm.get('method')} {norm.get('low')}..{norm.get('high')}")
    from cellseg_gui.core.model.scoring import shown_metrics

    metrics = shown_metrics(meta)
    if metrics:
        lines.append("metrics: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    if meta.get("mask_mode") == "instances" or "postprocess" in meta:
        from cellseg_gui.core.model.postprocess import postprocess_from_meta

        pp, note = postprocess_from_meta(meta)
        lines.append(f"cells: {note}" if note else f"cells: {pp.describe()}")
    training = meta.get("training") or {}
    if training:
        hist = training.get("history") or {}
        split = training.get("split") or {}
        settings = training.get("settings") or {}
        parts = []
        if hist.get("epoch"):
            parts.append(f"{len(hist['epoch'])} epochs")
        if split:
            parts.append(
                f"{len(split.get('train', []))} train / {len(split.get('val', []))} val images"
            )
        if settings:
            parts.append(
                f"{settings.get('optimizer')} lr {_fmt(settings.get('lr'), '.3g')}, "
                f"{settings.get('schedule')}, crop {settings.get('crop')}, "
                f"batch {settings.get('batch_size')}, seed {settings.get('seed')}"
            )
        if training.get("device"):
            parts.append(f"on {training.get('device')} ({training.get('precision', '?')})")
        if parts:
            lines.append("training: " + "; ".join(parts))
    versions = meta.get("versions") or {}
    if versions:
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if meta.get("created"):
        lines.append(f"created: {meta['created']}")
    return lines
