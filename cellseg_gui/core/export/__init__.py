"""Exports beyond the bundle: the bioimage.io model package."""
