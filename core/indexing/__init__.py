"""Autoindexing of rotation data (fft3d, fft1d, real-space grid search)."""

from .index import IndexingError, index
from .params import IndexParams
from .result import IndexResult

__all__ = ["IndexParams", "IndexResult", "IndexingError", "index"]
