"""Dead gaps between the sensor modules of Dectris pixel-array detectors.

Module sizes and gaps in pixels (fast, slow) as listed by the manufacturer
and used by dxtbx: Pilatus 487 x 195 with gaps 7 x 17, Eiger 1030 x 514
with 10 x 37, Eiger2 1028 x 512 with 12 x 38. The gaps become untrusted
rectangles in the DIALS panel mask layout ``(f0, s0, f1, s1)``, 0-based,
half-open: pixels f0 <= f < f1, s0 <= s < s1.
"""

from __future__ import annotations

MODULES = {
    "Pilatus": (487, 195, 7, 17),
    "Eiger": (1030, 514, 10, 37),
    "Eiger2": (1028, 512, 12, 38),
}


def _count(n: int, module: int, gap: int) -> int | None:
    k, rem = divmod(n + gap, module + gap)
    return k if rem == 0 and k >= 1 else None


def module_gap_mask(image_size: tuple[int, int], family: str) -> list[tuple[int, int, int, int]]:
    """Untrusted rectangles over the inter-module gaps; [] if the size does not fit."""
    nx, ny = image_size
    mf, ms, gf, gs = MODULES[family]
    kf, ks = _count(nx, mf, gf), _count(ny, ms, gs)
    if kf is None or ks is None:
        return []
    mask = []
    for i in range(1, kf):
        f0 = i * mf + (i - 1) * gf
        mask.append((f0, 0, f0 + gf, ny))
    for j in range(1, ks):
        s0 = j * ms + (j - 1) * gs
        mask.append((0, s0, nx, s0 + gs))
    return mask


def detector_family(image_size: tuple[int, int]) -> str | None:
    """Which Dectris module layout tiles an image of this size exactly."""
    for family, (mf, ms, gf, gs) in MODULES.items():
        if _count(image_size[0], mf, gf) and _count(image_size[1], ms, gs):
            return family
    return None
