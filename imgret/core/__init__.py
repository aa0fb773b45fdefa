"""Shared basics of every stage: errors, atomic files, progress bars, vector maths, KMeans."""
