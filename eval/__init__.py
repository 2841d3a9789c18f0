"""Offline evaluations of the prediction models on simulated members with known ground truth (python -m eval.<name>)."""
