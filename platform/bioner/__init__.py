"""bioner: biomedical NER with the multi-task MRC method on Ray Train, Ray Tune and MLflow."""

__version__ = "0.1.0"
