"""Shoebox mask codes, DIALS's (dials/model/data/mask_code.h), and gonio's own SHARED.

Plain integers (no numba): the kernels of :mod:`.kernels` and :mod:`.box_kernels`
both use them.
"""

VALID, BACKGROUND, FOREGROUND, STRONG, BACKGROUND_USED, OVERLAPPED = 1, 2, 4, 8, 16, 32
SHARED = 64  # gonio's own: a foreground pixel also inside another reflection's foreground
