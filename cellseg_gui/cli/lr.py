"""``cellseg lr-find`` and the learning-rate curve it draws."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from cellseg_gui.cli.common import _finished_code, _writable_folder
from cellseg_gui.cli.output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, Output
from cellseg_gui.cli.training import _load_training_samples, _run_lr_find, _train_config


def cmd_lr_find(args: argparse.Namespace, out: Output) -> int:
    base = Path(args.out)
    _writable_folder(base.parent)  # before the search, not after it
    cfg = _train_config(args)
    samples, _mode, n_bad = _load_training_samples(args, cfg, out)
    fin = _run_lr_find(samples, cfg, out, args)
    code = _finished_code(fin, out)
    if code != EXIT_OK or not fin.result:
        return code
    res = fin.result
    lrs = [float(v) for v in res.get("lrs", [])]
    losses = [float(v) for v in res.get("losses", [])]
    smoothed = [float(v) for v in res.get("smoothed", [])]
    csv_path = base.with_suffix(".csv")
    png_path = base.with_suffix(".png")
    from cellseg_gui.core.data.imageio import atomic_write_text

    lines = ["lr,loss,smoothed"]
    for lr, lo, sm in zip(lrs, losses, smoothed, strict=False):
        lines.append(f"{lr:.6g},{lo:.6g},{sm:.6g}")
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    suggested = float(res["suggested_lr"])
    steepest = res.get("steepest_lr")
    draw_lr_curve(png_path, lrs, losses, smoothed, suggested, steepest)
    finite = [(s, lr) for s, lr in zip(smoothed, lrs, strict=False) if math.isfinite(s)]
    if finite:
        best, at = min(finite)
        out.out(
            f"swept {len(lrs)} learning rates from {lrs[0]:.2g} to {lrs[-1]:.2g}; "
            f"smoothed loss from {finite[0][0]:.4f} to a minimum of {best:.4f} at lr {at:.3g}"
        )
    out.out(f"curve: {csv_path}, {png_path}")
    if not math.isfinite(suggested):
        out.out(f"no suggestion: {res.get('no_suggestion') or 'the loss never fell'}")
        return EXIT_FAILED
    if steepest is not None and math.isfinite(float(steepest)):
        out.out(f"steepest descent at lr {float(steepest):.3g}")
    out.out(f"suggested lr: {suggested:.3g}")
    return EXIT_BAD_INPUT if n_bad else EXIT_OK


def draw_lr_curve(
    path: Path,
    lrs: list[float],
    losses: list[float],
    smoothed: list[float],
    suggested: float | None,
    steepest: float | None = None,
    size: tuple[int, int] = (640, 400),
) -> None:
    """The loss-vs-learning-rate curve as a PNG, drawn with Pillow (no matplotlib):
    log-scaled x, raw losses as grey dots, the smoothed loss as a line, the suggestion
    as a red vertical line."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 60, 20, 20, 40  # margins: tick labels left, axis name top
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [
        (lr, lo, sm)
        for lr, lo, sm in zip(lrs, losses, smoothed, strict=False)
        if lr > 0 and math.isfinite(lo) and math.isfinite(sm)
    ]
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    if len(pts) >= 2:
        xs = [math.log10(p[0]) for p in pts]
        ys = [p[2] for p in pts] + [p[1] for p in pts]
        x0, x1 = min(xs), max(xs)
        sm_vals = [p[2] for p in pts]
        y0 = min(ys)
        # cap the top at 4x the smoothed minimum's range: the blown-up end hides the curve
        y1 = min(max(ys), min(sm_vals) + 4 * (sm_vals[0] - min(sm_vals) + 1e-12) + 1e-12)
        y1 = max(y1, max(sm_vals[: max(2, len(sm_vals) // 2)]))
        if x1 <= x0:
            x1 = x0 + 1
        if y1 <= y0:
            y1 = y0 + 1

        def px(lr: float) -> float:
            return left + (math.log10(lr) - x0) / (x1 - x0) * (w - left - right)

        def py(v: float) -> float:
            v = min(max(v, y0), y1)
            return h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom)

        for lr, lo, _ in pts:
            x, y = px(lr), py(lo)
            d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(170, 170, 170))
        d.line([(px(lr), py(sm)) for lr, _, sm in pts], fill=(41, 128, 185), width=2)
        for dec in range(math.ceil(x0), math.floor(x1) + 1):
            x = px(10.0**dec)
            d.line([(x, h - bottom), (x, h - bottom + 4)], fill="black")
            d.text((x - 12, h - bottom + 8), f"1e{dec}", fill="black")
        for frac in (0.0, 0.5, 1.0):
            v = y0 + frac * (y1 - y0)
            d.text((4, py(v) - 6), f"{v:.3g}", fill="black")
        if steepest and math.isfinite(float(steepest)):
            x = px(float(steepest))
            d.line([(x, top), (x, h - bottom)], fill=(39, 174, 96), width=1)
        if suggested and math.isfinite(float(suggested)):
            x = px(float(suggested))
            d.line([(x, top), (x, h - bottom)], fill=(231, 76, 60), width=2)
            d.text((min(x + 4, w - 120), h - bottom - 16), f"{suggested:.2g}", fill=(231, 76, 60))
    d.text((w // 2 - 40, h - 16), "learning rate (log)", fill="black")
    d.text((left + 4, 4), "loss (y axis)", fill="black")  # the y axis's name, above it
    # a key for every line, bottom-left: a sweep's loss starts high and falls to the right
    key = [((170, 170, 170), "loss of each step (dots)"), ((41, 128, 185), "smoothed loss")]
    if steepest and math.isfinite(float(steepest)):
        key.append(((39, 174, 96), "steepest descent"))
    if suggested and math.isfinite(float(suggested)):
        key.append(((231, 76, 60), "suggested learning rate"))
    for i, (colour, text) in enumerate(key):
        y = h - bottom - 8 - 14 * (len(key) - i)
        d.line([(left + 8, y + 5), (left + 26, y + 5)], fill=colour, width=3)
        d.text((left + 32, y), text, fill="black")
    import io

    from cellseg_gui.core.data.imageio import atomic_write_bytes

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
