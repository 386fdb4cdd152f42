"""One BLAS thread for the thin matrix work of refinement and scaling (threadpoolctl).

``threadpoolctl.threadpool_limits`` inspects every shared library the process has loaded
each time it is entered: ~1 ms in a bare Python, ~11 ms in a gonio process that has loaded
numba's and the image libraries, and refinement enters it once per call (index and rbs make
a dozen calls). The controller that holds the inspection is kept here instead, made again
when scipy's own BLAS (loaded with ``scipy.linalg``) has appeared since.
"""

from __future__ import annotations

import sys

_controller: dict = {}


def one_thread(user_api: str | None = "blas"):
    """A context manager limiting the BLAS (``user_api="blas"``) or every thread pool
    (``None``: BLAS and OpenMP) to one thread, as ``threadpool_limits(limits=1, user_api)``."""
    from threadpoolctl import ThreadpoolController

    key = "scipy.linalg" in sys.modules
    if _controller.get("key") is not key:
        _controller.update(key=key, controller=ThreadpoolController())
    return _controller["controller"].limit(limits=1, user_api=user_api)
