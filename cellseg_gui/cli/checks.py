"""``cellseg inspect`` (look at the data) and ``cellseg check`` (overfit one image)."""

from __future__ import annotations

import argparse
import json

from cellseg_gui.cli.common import _Cancel, _drive, _find_pairs, _finished_code
from cellseg_gui.cli.output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CLIError, Output, _fmt
from cellseg_gui.cli.training import _load_training_samples, _train_config


def cmd_inspect(args: argparse.Namespace, out: Output) -> int:
    from cellseg_gui.core.data.inspect import inspect_dataset

    pairs = _find_pairs(args.data)
    report = inspect_dataset(pairs, n_classes=args.classes, folder=args.data)
    if args.json:
        out.out(json.dumps(report.to_dict(), indent=2))
    else:
        out.out(report.to_text())
    for p in report.errors:
        out.err(f"error: {p.path}: {p.text}")
    return EXIT_BAD_INPUT if report.errors else EXIT_OK


def cmd_check(args: argparse.Namespace, out: Output) -> int:
    from cellseg_gui.core.data.inspect import inspect_dataset

    pairs = _find_pairs(args.data)
    report = inspect_dataset(pairs, n_classes=args.classes, folder=args.data)
    out.out(report.to_text())
    for p in report.errors:
        out.err(f"error: {p.path}: {p.text}")
    bad_paths = {p.path for p in report.errors}
    usable = [
        p
        for p in pairs
        if p.mask_path and str(p.image_path) not in bad_paths and str(p.mask_path) not in bad_paths
    ]
    if args.image:
        usable = [p for p in usable if p.name == args.image]
        if not usable:
            raise CLIError(args.data, f"no usable image named {args.image!r} with a mask")
    if not usable:
        out.error(CLIError(args.data, "no usable image with a mask for the overfit check"))
        return EXIT_BAD_INPUT
    cfg = _train_config(args)
    samples, _mode, _ = _load_training_samples(args, cfg, out, names=[usable[0].name])
    from cellseg_gui.core.jobs import CancelToken
    from cellseg_gui.core.training.overfit import overfit_check

    out.out("")
    out.out(f"overfit-one-image check on {samples[0].name} (can the model learn at all?)")
    token = CancelToken()
    with _Cancel(token, out):
        fin = _drive(
            overfit_check(samples[0], cfg, cancel=token, max_steps=args.max_steps),
            out,
            label="overfit check",
        )
    code = _finished_code(fin, out)
    if code != EXIT_OK:
        return code
    r = fin.result or {}
    verdict = "passed" if r.get("passed") else "FAILED"
    out.out(
        f"overfit check {verdict}: foreground Jaccard {_fmt(r.get('jaccard'))} after "
        f"{r.get('steps')} steps"
    )
    if r.get("advice"):
        out.out(str(r["advice"]))
    if report.errors:
        return EXIT_BAD_INPUT
    return EXIT_OK if r.get("passed") else EXIT_FAILED
