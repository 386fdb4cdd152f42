"""The stages of the dispersion threshold on one image, for display (dials.image_viewer's
threshold modes: mean, variance, dispersion, sigma_b, sigma_s, threshold).

The final strong-pixel mask comes from the spot finder itself
(:func:`gonio.core.spotfinding.threshold.threshold_image`); the intermediate
stages are recomputed here with whole-array window sums (scipy.ndimage),
following the definitions in :mod:`gonio.core.spotfinding.threshold`: over the
valid pixels of the (2ky+1) x (2kx+1) window, n, mean = S/n and the unbiased
variance (nQ - S^2)/(n(n-1)); the dispersion test var/mean > gain (1 +
sigma_background sqrt(2/(n-1))) and the strong test v > mean + sigma_strong
sqrt(gain mean) (Parkhurst et al. (2014) J. Appl. Cryst. 47, 512).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..spotfinding.threshold import threshold_image


@dataclass
class ThresholdStages:
    mean: np.ndarray
    variance: np.ndarray
    dispersion: np.ndarray  # index of dispersion var/mean
    dispersion_mask: np.ndarray  # bool: the window holds signal (sigma_b test)
    strong_mask: np.ndarray  # bool: the pixel is sigma_strong above the local mean (sigma_s test)
    final: np.ndarray  # bool: the spot finder's strong pixels


def stages(image: np.ndarray, static_mask: np.ndarray, trusted_range, params) -> ThresholdStages:
    """Every stage for one panel image (slow, fast); ``params`` a SpotFinderParams."""
    from scipy.ndimage import uniform_filter

    kx, ky = (int(k) for k in params.kernel_size)
    lo, hi = trusted_range
    v = image.astype(np.float64)
    valid = static_mask & (v > lo) & (v < hi)
    w = valid.astype(np.float64)
    size = (2 * ky + 1, 2 * kx + 1)
    area = size[0] * size[1]

    def window_sum(a):
        return uniform_filter(a, size, mode="constant") * area

    n = np.rint(window_sum(w))
    s = window_sum(v * w)
    q = window_sum(v * v * w)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, s / n, 0.0)
        var = np.where(n > 1, (n * q - s * s) / (n * (n - 1)), 0.0)
        disp = np.where(mean > 0, var / mean, 0.0)
        bound = params.gain * (1 + params.sigma_background * np.sqrt(2 / np.maximum(n - 1, 1)))
    ok = valid & (n >= params.min_local)
    dispersion_mask = ok & (disp > bound)
    strong_mask = ok & (v > mean + params.sigma_strong * np.sqrt(params.gain * np.maximum(mean, 0)))
    strong_mask &= v > params.global_threshold
    final = threshold_image(image, static_mask, trusted_range, params.threshold_algorithm,
                            (kx, ky), params.gain, params.sigma_background, params.sigma_strong,
                            params.min_local, params.global_threshold)
    return ThresholdStages(mean, var, disp, dispersion_mask, strong_mask, final)


def stages_png(st: ThresholdStages, region: tuple[int, int, int, int], title: str) -> bytes:
    """A 2 x 3 panel PNG of the stages over ``region`` (x0, x1, y0, y1) px."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x0, x1, y0, y1 = region
    crop = (slice(y0, y1), slice(x0, x1))
    step = max(1, int(np.ceil(max(x1 - x0, y1 - y0) / 800)))  # at most ~800 px a panel

    def reduced(a):
        """Block maxima of ``step`` x ``step`` px: isolated strong pixels stay visible."""
        a = a[crop]
        ny, nx = a.shape[0] // step * step, a.shape[1] // step * step
        return a[:ny, :nx].reshape(ny // step, step, nx // step, step).max(axis=(1, 3))

    panels = [("mean", st.mean, "viridis"), ("variance", st.variance, "viridis"),
              ("dispersion (var/mean)", st.dispersion, "viridis"),
              ("sigma_b: dispersion test", st.dispersion_mask, "gray_r"),
              ("sigma_s: strong test", st.strong_mask, "gray_r"),
              (f"threshold: strong pixels ({int(st.final[crop].sum())})", st.final, "gray_r")]
    fig = Figure(figsize=(15, 9.5), dpi=80)
    for k, (name, a, cmap) in enumerate(panels):
        ax = fig.add_subplot(2, 3, k + 1)
        a = reduced(a)
        if a.dtype == bool:
            ax.imshow(a, cmap=cmap, vmin=0, vmax=1, interpolation="nearest",
                      extent=(x0, x1, y1, y0))
        else:
            hi = float(np.percentile(a, 99.5)) if a.size else 1.0
            im = ax.imshow(a, cmap=cmap, vmin=0, vmax=max(hi, 1e-9), interpolation="nearest",
                           extent=(x0, x1, y1, y0))
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
