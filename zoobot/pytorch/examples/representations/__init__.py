"""Representations: ``get_representations.py`` writes encoder features per galaxy (optionally PCA-compressed)."""
