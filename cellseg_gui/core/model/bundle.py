"""Model bundles (``.cellseg``), and loading a bundle or an export as a predictor.

A bundle is one zip file: ``cellseg.json`` (everything needed to use the model again:
architecture, classes and colours, input channels, normalisation, training record,
metrics, software versions) and ``weights.pt`` (a ``torch.save``'d state dict). One file
so users can mail it; a zip so ``read_bundle_meta`` can show a model's card without
loading torch weights. Saving is atomic: a crash mid-save never leaves half a model.

Exports carry the same JSON (TorchScript: ``_extra_files["cellseg.json"]``; ONNX:
``metadata_props["cellseg"]``) so ``load_predictor`` can use them like a bundle, and each
export is run against the torch model before it replaces the target file: a mismatch
raises ``ExportError`` rather than leaving a silently different model behind (the exports
themselves are ``core/export/formats.py``'s).
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellseg_gui.core.config import ModelConfig, NormConfig
from cellseg_gui.core.data.fileio import atomic_write_bytes
from cellseg_gui.core.data.imageio import to_grey
from cellseg_gui.core.data.normalize import normalize
from cellseg_gui.core.model import predict as predict_module
from cellseg_gui.core.model.bundle_meta import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    META_NAME,
    ONNX_META_KEY,
    WEIGHTS_NAME,
    BundleError,
    ExportError,
    _check_file,
    _dumps,
    _parse_meta,
    _read_zip,
    architecture,
    default_classes,
    make_meta,
    read_bundle_meta,
)
from cellseg_gui.core.model.postprocess import (
    PostProcess,
    postprocess_from_meta,
    prediction_to_instances,
)
from cellseg_gui.core.model.predict import (
    Prediction,
    predict_tiled,
    select_device,
    whole_image_fits,
)
from cellseg_gui.core.model.unet import UNet, build_model

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "Bundle",
    "BundleError",
    "ExportError",
    "default_classes",
    "load_bundle",
    "load_predictor",
    "make_meta",
    "read_bundle_meta",
    "save_bundle",
]


def save_bundle(path: str | os.PathLike[str], model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model``'s weights and ``meta`` as one ``.cellseg`` file, atomically."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    wbuf = io.BytesIO()
    torch.save(state, wbuf)
    zbuf = io.BytesIO()
    # Weights are stored uncompressed: float noise does not deflate, and it saves seconds.
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr(META_NAME, _dumps(meta), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(WEIGHTS_NAME, wbuf.getvalue(), compress_type=zipfile.ZIP_STORED)
    atomic_write_bytes(path, zbuf.getvalue())


# ----------------------------------------------------------------------------- predictors


class _Predictor:
    """What every model file offers: ``.meta`` and ``.predict(raw_image)``; subclasses
    supply ``_forward`` (tensor -> logits) and ``device``."""

    meta: dict[str, Any]
    device: torch.device
    path: Path

    @property
    def model_config(self) -> ModelConfig:
        return architecture(self.meta)

    @property
    def n_classes(self) -> int:
        return int(self.model_config.n_classes)

    @property
    def classes(self) -> list[dict[str, Any]]:
        classes = self.meta.get("classes")
        return classes or default_classes(self.meta.get("mask_mode", ""), self.n_classes)

    @property
    def norm(self) -> NormConfig:
        return NormConfig.from_dict(self.meta.get("normalization"))

    def model_channels(self, raw: np.ndarray) -> np.ndarray:
        """Raw image -> the raw channels the model reads (colour to grey for a grey model)."""
        arr = np.asarray(raw)
        in_ch = self.model_config.in_channels
        if arr.ndim == 3 and self.meta.get("channels", "grey") == "grey" and in_ch == 1:
            arr = to_grey(arr)
        return arr

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw image (H, W) or (H, W, C) -> the float32 (C, H, W) the model was trained on,
        with the bundle's channel handling and normalisation."""
        arr = self.model_channels(raw)
        in_ch = self.model_config.in_channels
        image = normalize(arr, self.norm)
        if image.shape[0] != in_ch:
            raise ValueError(
                f"the model expects {in_ch} channel(s) but the image has {image.shape[0]}"
            )
        return image

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def postprocess(self) -> tuple[PostProcess, str]:
        """How this model's predictions become cells, and a note when the file has no
        usable settings (older bundles: the defaults, said once by the caller)."""
        return postprocess_from_meta(self.meta)

    def predict_cells(
        self, raw_image: np.ndarray, *, tile: int | None = None, tta: bool = False
    ) -> tuple[np.ndarray, Prediction]:
        """Cell ids (int32, 0 = background) and the class prediction they came from: the
        one path from a model file to cells, whichever format the file is."""
        pred = self.predict(raw_image, tile=tile, tta=tta, return_probs=True)
        pp, _ = self.postprocess
        mode = str(self.meta.get("mask_mode") or "instances")
        return prediction_to_instances(pred.labels, pred.probs, mode, pp), pred

    def _multiple(self) -> int:
        return self.model_config.size_multiple

    def predict(
        self,
        raw_image: np.ndarray,
        *,
        tile: int | None = None,
        overlap: int = 64,
        batch_size: int = 4,
        tta: bool = False,
        return_probs: bool = True,
    ) -> Prediction:
        """Preprocess a raw image exactly as in training, then tiled prediction."""
        return self.predict_preprocessed(
            self.preprocess(raw_image), tile=tile, overlap=overlap, batch_size=batch_size,
            tta=tta, return_probs=return_probs,
        )  # fmt: skip

    def predict_preprocessed(
        self,
        image: np.ndarray,
        *,
        tile: int | None = None,
        overlap: int = 64,
        batch_size: int = 4,
        tta: bool = False,
        return_probs: bool = True,
    ) -> Prediction:
        """Prediction of an image already normalised (float32 (C, H, W)). ``tile`` None
        (the default, what the CLI and the window use): in one piece when it fits
        (``whole_image_fits``), as validation scores it, so the figures agree; else in
        tiles of ``DEFAULT_TILE``. A number asks for tiles of that size (less memory; the
        cells may differ a little from the run's)."""
        fn = _Forward(self._forward, self.model_config)
        if tile is None:
            height, width = np.asarray(image).shape[-2:]
            whole = whole_image_fits(height, width, self.device)
            tile = max(int(height), int(width)) if whole else predict_module.DEFAULT_TILE
        return predict_tiled(
            fn,
            image,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            device=self.device,
            tta=tta,
            return_probs=return_probs,
        )


class _Forward:
    """A plain callable carrying ``cfg`` so the tiler can round tiles to its size multiple."""

    def __init__(self, fn: Any, cfg: ModelConfig) -> None:
        self.fn = fn
        self.cfg = cfg

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _TorchPredictor(_Predictor):
    """A torch module on a device, with the bundle's record."""

    def __init__(self, model: Any, meta: dict[str, Any], device: torch.device, path: Path):
        self.model = model
        self.meta = meta
        self.device = device
        self.path = path

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device))


class Bundle(_TorchPredictor):
    """A loaded ``.cellseg`` model: ``.model`` (a ``UNet`` in eval mode), ``.meta``."""

    model: UNet


def load_bundle(path: str | os.PathLike[str], device: str | torch.device | None = None) -> Bundle:
    """Load a ``.cellseg`` file; ``device=None`` picks CUDA, then MPS, then the CPU."""
    path = Path(path)
    files = _read_zip(path, (META_NAME, WEIGHTS_NAME))
    meta = _parse_meta(path, files[META_NAME])
    try:
        cfg = architecture(meta)
        model = build_model(cfg)
    except (TypeError, ValueError) as exc:
        raise BundleError(path, f"bad architecture in {META_NAME}: {exc}") from None
    try:
        state = torch.load(io.BytesIO(files[WEIGHTS_NAME]), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # torch raises many types for damaged pickles / shapes
        if "weights only" in str(exc).lower() or isinstance(exc, pickle.UnpicklingError):
            # torch's message goes on to suggest loading it as code: never for a model
            # file from elsewhere, so only what is wrong is said
            raise BundleError(path, f"{WEIGHTS_NAME} is damaged or holds more than plain "
                              "weights, so it is not loaded (a model file is only ever "
                              "read as data)") from None  # fmt: skip
        raise BundleError(path, f"weights do not load: {str(exc).splitlines()[0]}") from None
    dev = select_device(device) if isinstance(device, (str, type(None))) else torch.device(device)
    model.to(dev).eval()
    return Bundle(model, meta, dev, path)


class TorchScriptPredictor(_TorchPredictor):
    """An exported TorchScript module, used like a bundle."""


class OnnxPredictor(_Predictor):
    def __init__(self, session: Any, meta: dict[str, Any], path: Path):
        self.session = session
        self.meta = meta
        self.device = torch.device("cpu")
        self.path = path
        self._input = session.get_inputs()[0].name

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self._input: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def _load_torchscript(path: Path, device: str | torch.device | None) -> TorchScriptPredictor:
    extra = {META_NAME: ""}
    dev = select_device(device) if isinstance(device, (str, type(None))) else torch.device(device)
    try:
        module = torch.jit.load(str(path), map_location=dev, _extra_files=extra)
    except Exception as exc:
        raise BundleError(path, f"not a TorchScript model ({str(exc).splitlines()[0]})") from None
    if not extra[META_NAME]:
        raise BundleError(path, f"TorchScript file has no {META_NAME} (not exported by cellseg)")
    raw = extra[META_NAME]
    meta = _parse_meta(path, raw if isinstance(raw, bytes) else str(raw).encode())
    module.eval()
    return TorchScriptPredictor(module, meta, dev, path)


def _ort_session(path_or_bytes: str | bytes) -> Any:
    import onnxruntime as ort

    providers = [p for p in ("CUDAExecutionProvider",) if p in ort.get_available_providers()]
    providers.append("CPUExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, sess_options=opts, providers=providers)


def _load_onnx(path: Path) -> OnnxPredictor:
    try:
        import onnx
    except ImportError:  # pragma: no cover - optional extra
        raise BundleError(
            path, "ONNX support is not installed (pip install cellseg-gui[onnx])"
        ) from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise BundleError(path, f"not an ONNX model ({str(exc).splitlines()[0]})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_META_KEY not in props:
        raise BundleError(path, "ONNX file has no cellseg metadata (not exported by cellseg)")
    meta = _parse_meta(path, props[ONNX_META_KEY].encode())
    try:
        session = _ort_session(str(path))
    except Exception as exc:
        raise BundleError(path, f"onnxruntime cannot run it ({str(exc).splitlines()[0]})") from None
    return OnnxPredictor(session, meta, path)


def load_predictor(path: str | os.PathLike[str], device: str | torch.device | None = None):
    """Any model file cellseg writes (``.cellseg`` bundle, TorchScript ``.pt``/``.ts``,
    ``.onnx``) as an object with ``.meta`` and ``.predict(raw_image, ...)``."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path)
    if path.suffix.lower() == ".cellseg":
        return load_bundle(path, device)  # its own, more precise error messages
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise BundleError(path, f"damaged zip file ({exc})") from None
        if META_NAME in names:
            return load_bundle(path, device)
        if "rdf.yaml" in names:
            raise BundleError(path, "a bioimage.io package, which cellseg writes but does not "
                              "predict from: use the .cellseg it was exported from, or its "
                              "TorchScript / ONNX export (`cellseg export`)")  # fmt: skip
        if not any(n.endswith("/constants.pkl") for n in names) and any(
            n.endswith("/data.pkl") for n in names
        ):  # torch.save's format, not TorchScript's: a checkpoint, or weights alone
            raise BundleError(path, "a saved PyTorch object (a training checkpoint?), not a "
                              "model: `cellseg train --resume` continues a run from its "
                              "checkpoint; predict with the .cellseg the run wrote")  # fmt: skip
        return _load_torchscript(path, device)
    with open(path, "rb") as fh:
        head = fh.read(64)
    if path.suffix.lower() in (".pt", ".ts", ".pth", ".torchscript"):
        return _load_torchscript(path, device)
    if b"pytorch" in head.lower() or b"onnx" in head.lower():
        return _load_onnx(path)
    raise BundleError(path, "not a cellseg model (expected .cellseg, TorchScript or ONNX)")
