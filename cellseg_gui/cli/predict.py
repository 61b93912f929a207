"""``cellseg predict``: label masks, cells, per-cell measurements and Fiji ROIs for images,
written where they cannot replace an image or a hand-drawn mask."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cellseg_gui.cli.common import (
    _check_finite,
    _collect_images,
    _load_model,
    _writable_folder,
)
from cellseg_gui.cli.output import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    CLIError,
    Output,
    _expected_errors,
    _one_line,
)


def cmd_predict(args: argparse.Namespace, out: Output) -> int:

    if (args.measure or args.rois) and not args.instances:
        raise CLIError(None, "--measure and --rois need --instances (they describe cells)")
    predictor = _load_model(args.model, args.device)
    out_dir = _writable_folder(Path(args.out), create=True)  # before any prediction
    files, errors = _collect_images(args.inputs)
    for e in errors:
        out.error(e)
    files, twice = _once_each(files)
    for path in twice:
        out.err(f"note: {path}: given more than once, predicted once")
    if not files:
        return EXIT_BAD_INPUT
    summary: list[dict[str, Any]] = []
    n_bad = len(errors)
    if args.instances:
        pp, note = predictor.postprocess
        out.err(f"note: {note}" if note else f"cells: {pp.describe()}")
    from cellseg_gui.core.events import Message, Predicted
    from cellseg_gui.core.model.batch import items_from_paths, predict_batch

    large, files = _split_large(files)
    targets = _targets(large, files, out_dir, args.ext)
    for path, why in _refused(targets, large + files, overwrite=args.overwrite):
        out.error(CLIError(targets[path], why))
        n_bad += 1
        del targets[path]
    large = [p for p in large if p in targets]
    files = [p for p in files if p in targets]
    renamed = {p for p, t in targets.items() if t.stem != p.stem}
    for path in large:  # band by band, straight into their files (core.model.bands)
        if not _predict_large(predictor, path, targets[path], args, out):
            n_bad += 1
    # the window's Predict all runs the same job (core.model.batch): the same cells and errors
    events = predict_batch(
        predictor, items_from_paths(files), tile=args.tile, tta=args.tta, score=False,
        cells=bool(args.instances), keep_image=bool(args.measure or args.rois),
    )  # fmt: skip
    for ev in events:
        if isinstance(ev, Message):  # a stack read as one plane, NaN pixels
            out.err(f"note: {ev.text}")
            continue
        if not isinstance(ev, Predicted):
            continue
        path = files[ev.index]
        if ev.error:
            out.error(ev.error)
            n_bad += 1
            continue
        target = targets[path]
        try:  # an image whose mask was renamed (a stem met twice) is named by its path
            name = str(path) if path in renamed else path.name
            line = _write_prediction(ev, path, target, args, summary, name)
        except (OSError, ValueError) as exc:  # a full disk, a PNG too small for the ids
            out.error(CLIError(target, _one_line(exc)))
            n_bad += 1
            continue
        out.out(line)
        out.bar((ev.index + 1) / len(files), f"{ev.index + 1}/{len(files)} images")
    out.clear_bar()
    if summary:
        from cellseg_gui.core.scores.measure import write_csv

        write_csv(out_dir / "cells_summary.csv", summary)
        out.out(f"summary: {out_dir / 'cells_summary.csv'}")
    if n_bad:
        out.err(f"{n_bad} of {len(files) + len(large) + len(errors)} input(s) failed")
        return EXIT_BAD_INPUT
    return EXIT_OK


def _file_id(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` is (device and inode): the same for two spellings of one name
    on a case-insensitive disk, a link, or a path given two ways; None when absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _once_each(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """``files`` without a file met before (the same file given twice, or by two paths),
    and those left out."""
    seen: set = set()
    once, twice = [], []
    for p in files:
        key = _file_id(p) or p.resolve()
        (twice if key in seen else once).append(p)
        seen.add(key)
    return once, twice


def _targets(large: list[Path], files: list[Path], out_dir: Path, ext: str) -> dict[Path, Path]:
    """Each input's mask file in ``out_dir``: its stem, or, for a stem met before (two
    folders), the folders' names before it, else a number after it; never one name for two
    inputs, also where names differ only in case. The very large ones as TIFF."""
    used: set[str] = set()
    targets = {}
    for path in large + files:
        stem, folder, n = path.stem, path.parent, 1
        while stem.casefold() in used:  # met before: the folders' names, then a number
            if folder.name:
                stem, folder = f"{folder.name}_{stem}", folder.parent
            else:
                n += 1
                stem = f"{path.stem}_{n}"
        used.add(stem.casefold())
        targets[path] = out_dir / f"{stem}.{'tif' if path in large else ext}"
    return targets


def _refused(
    targets: dict[Path, Path], inputs: list[Path], *, overwrite: bool
) -> list[tuple[Path, str]]:
    """The inputs whose mask must not be written: into an input image's own folder (it
    would replace the image, or be read as an image beside it); over or beside a file of
    its name that ``cellseg predict`` did not write (a hand-drawn mask of another type
    would be read in its place); over such a file of its very name only with
    ``overwrite``. Files are compared as files (device and inode), not as names."""
    from cellseg_gui.core.data.imageio import IMAGE_EXTS, MASK_WRITE_EXTS
    from cellseg_gui.core.data.maskwrite import is_prediction_file

    if not targets:
        return []
    out_dir = next(iter(targets.values())).parent
    own_dirs = {_file_id(p.parent) for p in inputs} - {None}
    if _file_id(out_dir) in own_dirs:
        why = ("is in the folder of the input images: a mask written there would replace "
               "an image or be read as one (choose another --out)")  # fmt: skip
        return [(path, why) for path in targets]
    own = {_file_id(p) for p in inputs} - {None}
    kinds = {e.lower() for e in (*IMAGE_EXTS, *MASK_WRITE_EXTS)}
    by_stem: dict[str, list[Path]] = {}
    for f in out_dir.iterdir():
        if f.suffix.lower() in kinds:
            by_stem.setdefault(f.stem.casefold(), []).append(f)
    refused = []
    for path, target in targets.items():
        for there in by_stem.get(target.stem.casefold(), []):
            same = there.name.casefold() == target.name.casefold()
            if _file_id(there) in own:
                why = "is an input image; its prediction would replace it (choose another --out)"
            elif is_prediction_file(there):
                continue  # a prediction of an earlier run: replaced, or left beside
            elif not same:
                why = (f"{there.name} is there already (an image or a hand-drawn mask?): "
                       "a prediction beside it would be read in its place (choose another "
                       "--out)")  # fmt: skip
            elif not overwrite:
                why = ("exists and is not a mask cellseg predicted (an image or a "
                       "hand-drawn mask?); left as it is: choose another --out, or add "
                       "--overwrite")  # fmt: skip
            else:
                continue
            refused.append((path, why))
            break
    return refused


def _write_prediction(
    ev: Any, path: Path, target: Path, args: Any, summary: list, name: str
) -> str:
    """Write one image's prediction (and its measurements and ROIs); the line to print."""
    import numpy as np

    from cellseg_gui.core.data.maskwrite import PREDICTION_SOFTWARE, write_mask

    if not args.instances:
        write_mask(target, ev.labels.astype(np.uint8), software=PREDICTION_SOFTWARE)
        return f"{path.name} -> {target}  (foreground {100 * float((ev.labels > 0).mean()):.1f}%)"
    labels = ev.cells
    n = int(labels.max()) if labels.size else 0  # ids are 1..N
    # 16-bit as Cellpose writes them and Fiji opens them (it reads 32-bit integers as
    # floats); wider only past 65535 cells, which a PNG cannot hold (write_mask says so)
    write_mask(
        target, labels.astype(np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32),
        software=PREDICTION_SOFTWARE,
    )  # fmt: skip
    extra = ""
    if args.measure or args.rois:
        from cellseg_gui.core.scores.measure import export_cells

        row, written = export_cells(
            target.parent, target.stem, labels, ev.image, measure=args.measure,
            rois=args.rois, image_name=name,
        )  # fmt: skip
        if args.measure:
            summary.append(row)
        extra = "".join(f", {p.name}" for p in written)
        if args.rois and not n:
            extra += ", no ROI set (no cells to outline)"
    return f"{path.name} -> {target}  ({n} cells{extra})"


def _split_large(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(images too large for a whole-image prediction, the others), from their headers."""
    from cellseg_gui.core.data.imageio import image_info
    from cellseg_gui.core.model.bands import needs_bands

    large, small = [], []
    for path in files:
        try:
            big = needs_bands(tuple(image_info(path)["shape"]))
        except (OSError, ValueError):
            big = False  # the batch reads it and names what is wrong
        (large if big else small).append(path)
    return large, small


def _predict_large(predictor: Any, path: Path, target: Path, args: Any, out: Output) -> bool:
    """One very large image, band by band into a tiled BigTIFF; False on failure."""
    from cellseg_gui.core.data.imageio import read_image
    from cellseg_gui.core.model.bands import predict_bands, write_bands

    try:
        raw = read_image(path, channels=predictor.meta.get("channels", "grey"))
        _check_finite(raw, path)
        from cellseg_gui.core.model.batch import input_notes

        for note in input_notes(path, raw):
            out.err(f"note: {note}")
    except _expected_errors() as exc:
        out.error(exc)
        return False
    h, w = raw.shape[:2]
    cells = bool(args.instances)
    notes = [f"{h * w / 1e6:.0f} megapixels: predicted band by band, written as a tiled TIFF"]
    if args.ext != "tif":
        notes.append(f"not .{args.ext}")
    if args.measure or args.rois:
        notes.append("no --measure or --rois for it (they need the whole image's cells)")
    out.err(f"{path.name}: " + "; ".join(notes))

    def progress(band: Any) -> None:
        out.bar(
            (band.index + 1) / band.count, f"{path.name}: band {band.index + 1} of {band.count}"
        )

    try:
        stats = write_bands(
            target, predict_bands(predictor, raw, cells=cells, tile=args.tile, tta=args.tta),
            (h, w), cells=cells, on_band=progress,
        )  # fmt: skip
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        out.clear_bar()
        out.error(CLIError(path, _one_line(exc)))
        return False
    out.clear_bar()
    if cells:
        out.out(f"{path.name} -> {target}  ({int(stats['cells'])} cells)")
    else:
        out.out(f"{path.name} -> {target}  (foreground {100 * stats['foreground']:.1f}%)")
    return True
