"""Exports beyond the bundle: TorchScript and ONNX (each checked against the torch model
before it replaces a file) and the bioimage.io model package."""
