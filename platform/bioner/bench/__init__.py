"""Benchmarks: training and prediction throughput of bioner against the plain Hugging Face recipes,
which live here as the references (`bioner fidelity` trains the HF recipe from here too)."""
