"""`bioner report`: tables like the paper's, plots and one self-contained HTML page per study."""

from .build import Report, build_report

__all__ = ["Report", "build_report"]
