"""Kept for models logged before the package was layered: their entry file imports
`bioner.pyfunc.BioNERPyfunc`. New models name `bioner.tracking.pyfunc`."""

from bioner.tracking.pyfunc import BioNERPyfunc

__all__ = ["BioNERPyfunc"]
