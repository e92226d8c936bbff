"""Training on Ray Train: the per-worker loop, the driver that launches it, local Ray start-up, and
the live metrics workers export to Prometheus."""
