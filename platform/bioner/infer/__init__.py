"""Inference: the Tagger (raw text or words -> entities), entity-level metrics, and scoring a split."""
