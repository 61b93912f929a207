"""One widget per file; no torch, no training logic."""
