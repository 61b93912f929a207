"""The command line: every command's options and the types that check them."""

from __future__ import annotations

import argparse
import math
from typing import Any, NoReturn

from cellseg_gui.cli.checks import cmd_check, cmd_inspect
from cellseg_gui.cli.lr import cmd_lr_find
from cellseg_gui.cli.models import cmd_evaluate, cmd_export, cmd_info
from cellseg_gui.cli.output import EXIT_BAD_INPUT, EXIT_HELP
from cellseg_gui.cli.predict import cmd_predict
from cellseg_gui.cli.training import cmd_train

# core.model.predict.WHOLE_IMAGE_PIXELS, in words
TILE_HELP = (
    "predict in tiles of this size (less memory; cells may differ a little from the run's "
    "figures). By default images of up to 4 megapixels (1 on MPS) go through whole, as "
    "validation scores them, and larger ones in tiles of 512"
)


def _parse_lr(text: str) -> float | str:
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("learning rate must be a positive number")
    return value


def _positive(text: str, cast: type, what: str):
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    return _positive(text, int, "a whole number")


def _positive_float(text: str) -> float:
    return _positive(text, float, "a number")


def _augmentation_names() -> tuple[str, ...]:
    from dataclasses import fields

    from cellseg_gui.core.config import AugmentConfig  # no torch: keeps --help fast

    return tuple(f.name for f in fields(AugmentConfig))


AUGMENTATIONS = _augmentation_names()


AUGMENT_PRESETS = ("default", "none", "all")


def _augment(text: str) -> str | tuple[str, ...]:
    """A preset (default, none, all) or a comma-separated list of augmentations to use."""
    text = text.strip().lower()
    if text in AUGMENT_PRESETS:
        return text
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown augmentation {', '.join(unknown) or repr(text)}: use "
            f"{', '.join(AUGMENT_PRESETS)} or a comma-separated list of {', '.join(AUGMENTATIONS)}"
        )
    return names


def _downsample(text: str) -> int:
    value = _positive_int(text)
    if value > 8:
        raise argparse.ArgumentTypeError(f"expected 1 to 8, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``error: ...`` (exit 2) like every other
    bad input, with a pointer to --help instead of the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training settings")
    g.add_argument("--hidden", type=_positive_int, help="width of the first U-Net level")
    g.add_argument("--depth", type=_positive_int, help="number of down-sampling levels")
    g.add_argument(
        "--downsample",
        type=_downsample,
        help="the network runs at 1/N resolution, 1-8 (default: 2 when the masks' objects "
        "are large, else 1)",
    )
    g.add_argument("--dropout", type=float, help="dropout in the U-Net blocks (0-1)")
    g.add_argument("--crop", type=_positive_int, help="side of the random training crops")
    g.add_argument("--batch", type=_positive_int, help="crops per batch")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    g.add_argument("--weight-decay", type=float, dest="weight_decay")
    g.add_argument(
        "--schedule", choices=("constant", "step", "cosine", "sgdr", "onecycle"), help="LR schedule"
    )
    g.add_argument(
        "--augment", type=_augment, metavar="PRESET|LIST",
        help="default (all of them), none, all, or the ones to use, e.g. flips,rot90 "
        f"(of {', '.join(AUGMENTATIONS)})",
    )  # fmt: skip
    g.add_argument(
        "--mask-mode",
        dest="mask_mode",
        choices=("auto", "binary", "classes", "instances"),
        help="how to read masks (default: auto-detect)",
    )
    g.add_argument("--classes", type=_positive_int, help="number of classes (default: from masks)")
    g.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto"
    )
    g.add_argument(
        "--amp",
        nargs="?",
        const="on",
        choices=("auto", "on", "off", "fp16", "bf16"),
        help="mixed precision; bare --amp turns it on (bf16/fp16 on CUDA, bf16 on the CPU); "
        "default auto: on where it is faster",
    )
    g.add_argument("--seed", type=int, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    from cellseg_gui import __version__

    parser = _Parser(
        prog="cellseg",
        description="Segment microscopy images with a U-Net, headless.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cellseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    kw: dict[str, Any] = {
        "epilog": EXIT_HELP,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }

    p = sub.add_parser("predict", help="write label masks for images", **kw)
    p.add_argument("model", help="model file (.cellseg, TorchScript .pt or .onnx)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders")
    p.add_argument("--out", required=True, help="output folder (masks keep the inputs' stems)")
    p.add_argument(
        "--instances", action="store_true", help="write instance labels (one id per cell)"
    )
    p.add_argument("--tile", type=_positive_int, default=None, help=TILE_HELP)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--ext", default="tif", choices=("tif", "png"), help="mask format (default tif)")
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace files in --out that cellseg did not predict (never the input images)",
    )  # fmt: skip
    p.add_argument(
        "--measure",
        action="store_true",
        help="with --instances: NAME_cells.csv per image (area_px, centroid, bounding box, "
        "perimeter_px, eccentricity, solidity, mean/min/max intensity; sizes in pixels, "
        "positions as 0-based row/column with bbox_max exclusive, intensities in the file's "
        "units) and cells_summary.csv",
    )
    p.add_argument(
        "--rois",
        action="store_true",
        help="with --instances: NAME_rois.zip per image, a Fiji/ImageJ ROI set (ROI Manager)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "evaluate",
        help="foreground Jaccard and cell AP of a model on a labelled folder",
        **kw,
    )
    p.add_argument("model")
    p.add_argument("data", help="folder with images/ and masks/")
    p.add_argument("--tile", type=_positive_int, default=None, help=TILE_HELP)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument(
        "--mask-mode", dest="mask_mode", default="auto",
        choices=("auto", "instances", "classes", "binary"),
        help="how to read the masks: as the model was trained (auto, the default), as "
        "instances (every id one cell), or as classes or binary (true cells are the "
        "connected components of the foreground)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="the same figures as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "export",
        help="export to TorchScript, ONNX or a bioimage.io package (checked after writing)",
        **kw,
    )
    p.add_argument("model")
    p.add_argument("--format", required=True, choices=("torchscript", "onnx", "bioimageio"))
    p.add_argument("--out", required=True, help="output file")
    p.add_argument(
        "--sample",
        metavar="IMAGE",
        help="bioimageio: image for the test tensors and cover (default: a generated one)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="show what a model file records", **kw)
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="the whole record as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "train",
        help="train a U-Net on a labelled folder",
        description="Train a U-Net. Ctrl+C stops cleanly and keeps the best model so far. "
        "Writes MODEL.cellseg, MODEL_history.csv and a resumable MODEL.ckpt.",
        **kw,
    )
    p.add_argument("data", help="folder with images/ and masks/")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.cellseg)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--epochs", type=_positive_int, help="number of epochs (default 40)")
    stop.add_argument("--minutes", type=_positive_float, help="train for this long instead")
    p.add_argument(
        "--lr", type=_parse_lr, help="learning rate, or 'auto' to run the LR finder first"
    )
    p.add_argument("--steps-per-epoch", type=_positive_int, dest="steps_per_epoch")
    p.add_argument(
        "--patience",
        type=int,
        help="early-stopping patience in epochs (0: off); one-cycle and cosine runs count "
        "them once the learning rate is down to a tenth of its peak",
    )
    p.add_argument("--val", metavar="NAMES", help="comma-separated validation image names")
    p.add_argument("--val-fraction", type=float, dest="val_fraction")
    p.add_argument(
        "--boundary",
        choices=("touching", "all"),
        help="instance masks: boundary class only where cells touch (default) or around every cell",
    )
    p.add_argument(
        "--boundary-width", type=_positive_int, dest="boundary_width",
        help="boundary width in pixels (default 3)",
    )  # fmt: skip
    p.add_argument(
        "--separation-weight", type=float, dest="separation_weight",
        help="U-Net paper's loss weight w0 on pixels between touching cells (default 0: off)",
    )  # fmt: skip
    p.add_argument(
        "--distance-head", action=argparse.BooleanOptionalAction, dest="distance_head",
        help="instance masks: also learn how close each pixel lies to its cell's centre and "
        "offer seeds at its peaks to the post-processing search (default off: it did not "
        "beat the derived seeds in 10-minute CPU runs; see the README); it replaces the "
        "flows",
    )  # fmt: skip
    p.add_argument(
        "--flows", action=argparse.BooleanOptionalAction, dest="flow_head",
        help="instance masks: learn Cellpose-style flows towards each cell's centre and "
        "make cells where the flows meet (default on; --no-flows turns them off)",
    )  # fmt: skip
    p.add_argument("--resume", metavar="CKPT", help="continue an interrupted run")
    p.add_argument("--init", metavar="MODEL", help="fine-tune: start from this model's weights")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file (default MODEL.ckpt)")
    _add_lr_sweep_options(p)
    _add_model_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="learning-rate finder (CSV and PNG of the curve)", **kw)
    p.add_argument("data")
    p.add_argument("--out", default="lr_find", help="writes OUT.csv and OUT.png (default lr_find)")
    _add_lr_sweep_options(p)
    _add_model_options(p)
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("check", help="inspect the data and run the overfit-one-image check", **kw)
    p.add_argument("data")
    p.add_argument("--image", help="image to overfit (default: the first usable one)")
    p.add_argument("--max-steps", type=_positive_int, default=600, dest="max_steps")
    _add_model_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("inspect", help="statistics and problems of a data set", **kw)
    p.add_argument("data")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--classes", type=_positive_int, help="flag mask values >= this many classes")
    p.set_defaults(func=cmd_inspect)
    return parser


def _add_lr_sweep_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("learning-rate finder")
    g.add_argument("--min-lr", type=_positive_float, default=1e-6, dest="min_lr")
    g.add_argument("--max-lr", type=_positive_float, default=10.0, dest="max_lr")
    g.add_argument("--lr-steps", type=_positive_int, default=100, dest="lr_steps")
