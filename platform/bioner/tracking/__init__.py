"""Tracking: the MLflow store and output folder, per-epoch metrics, the logged pyfunc model, and the
model registry with its significance-gated promotion."""
