"""Scores and measurements: pixel Jaccard, instance matching and AP, the one definition of each figure shown, per-cell measurements and ROIs, and the gallery's difference thumbnails."""
