"""The physical scaling model of dials.scale (Beilsten-Edmands et al. 2020, Acta Cryst. D76, 385).

For reflection i of one sweep the inverse scale factor is

    g_i = C_scale(phi_i) * C_decay(phi_i, d_i) * C_abs(s0_i, s1_i)

- C_scale = Gaussian-smoothed scale parameters over rotation (one every
  ``scale_interval`` degrees, plus one beyond each end);
- C_decay = exp(B(phi) / (2 d^2)) with B Gaussian-smoothed the same way
  (``decay_interval``);
- C_abs = 1 + sum_{l=1..lmax} sum_{m=-l..l} P_lm (Y_lm(s0') + Y_lm(s1')) / 2
  with Y_lm real spherical harmonics of the incident and scattered beam
  directions in the crystal frame (rotated by -phi about the spindle).

The smoother is DIALS's GaussianSmoother (gonio.core.refinement.smoother)
with ceil(rotation range / interval) intervals, as dials.scale: n + 2
parameters for n >= 3 intervals. All terms are linear in their parameters,
so the model, its gradient and its (per-sweep, dense) Jacobian are cheap array operations.

The KB model has one scale and one B per sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def smoother_layout(phi_range: tuple[float, float], interval: float) -> tuple[int, float]:
    """(number of parameters, interval width in deg) for a rotation range, as DIALS."""
    width = max(phi_range[1] - phi_range[0], 1e-6)
    n_int = max(int(np.ceil(width / interval)), 1)
    n_param = {1: 2, 2: 3}.get(n_int, n_int + 2)
    return n_param, width / n_int


@dataclass
class SmootherDesign:
    """The non-zero smoother weights of each row: value = sum(weight * p[index], axis=1)."""

    index: np.ndarray   # (N, k) parameter indices
    weight: np.ndarray  # (N, k) normalised weights (rows sum to 1)
    n_param: int

    def matrix(self):
        """The design as a scipy.sparse CSR matrix (N, n_param), built once."""
        m = self.__dict__.get("_matrix")
        if m is None:
            from scipy import sparse

            n, k = self.index.shape
            m = sparse.csr_matrix((self.weight.ravel(), self.index.ravel(),
                                   np.arange(0, n * k + 1, k)), shape=(n, self.n_param))
            self.__dict__["_matrix"] = m
        return m

    def value(self, p: np.ndarray) -> np.ndarray:
        if self.index.shape[1] > 8:  # the array model's 2D/3D grids: a sparse product
            return self.matrix() @ p
        return np.einsum("ij,ij->i", self.weight, p[self.index])

    def transpose_dot(self, v: np.ndarray) -> np.ndarray:
        """(design)^T v: sum over rows of weight * v into each parameter."""
        if self.index.shape[1] > 8:
            return self.matrix().T @ v
        return np.bincount(self.index.ravel(), weights=(self.weight * v[:, None]).ravel(),
                           minlength=self.n_param)

    def subset(self, sel) -> SmootherDesign:
        return SmootherDesign(self.index[sel], self.weight[sel], self.n_param)


def smoother_design(phi_deg, phi_range, interval, data_range=None) -> SmootherDesign:
    """Smoother weights of reflections at ``phi_deg``: DIALS's GaussianSmoother
    (:mod:`gonio.core.refinement.smoother`) over the rotation range; with ``data_range``
    (the rotation range (deg) of the reflections scaled) placed as dials.scale 3.x places
    it: from the first reflection, over a whole number of normalised units of
    interval / 0.999 (its ``norm_fac``), as many intervals as over the rotation range."""
    from gonio.core.refinement.smoother import GaussianSmoother

    n_param, step = smoother_layout(phi_range, interval)
    n_int = {2: 1, 3: 2}.get(n_param, n_param - 2)
    if data_range is None:
        smoother = GaussianSmoother((phi_range[0], phi_range[0] + n_int * step), n_int)
    else:
        unit = step / 0.999
        span = max(int(np.ceil(round((data_range[1] - data_range[0]) / unit, 10))), 1)
        smoother = GaussianSmoother((data_range[0], data_range[0] + span * unit), n_int)
    w = smoother.weights(phi_deg)
    k = min(3, n_param)
    idx = np.argpartition(-w, k - 1, axis=1)[:, :k] if k < n_param else \
        np.broadcast_to(np.arange(n_param), (len(w), n_param)).copy()
    return SmootherDesign(idx, np.take_along_axis(w, idx, axis=1), n_param)


#: the harmonics of :func:`real_spherical_harmonics`, as named in a written model
HARMONICS = "real orthonormal Y_lm, l=1..lmax, m=-l..l, no Condon-Shortley phase"
#: key of a written model's configuration_parameters that marks a model gonio refined (DIALS
#: ignores it): scale continues from such a model (:mod:`gonio.core.scaling.existing`)
GONIO_MODEL = "gonio_model"


def absorption_surface(p_abs, lmax: int, n_polar: int = 60, n_azimuth: int = 120):
    """The absorption term 1 + sum p_lm Y_lm(v) of one beam direction v (crystal frame) on a
    grid: (polar angles (deg, n_polar), azimuths (deg, n_azimuth), values (n_polar, n_azimuth)).
    A reflection's term is the mean of the surface at its incident and diffracted beams."""
    polar = np.linspace(0.0, 180.0, n_polar)
    azimuth = np.linspace(0.0, 360.0, n_azimuth)
    t, a = np.meshgrid(np.radians(polar), np.radians(azimuth), indexing="ij")
    v = np.column_stack([(np.sin(t) * np.cos(a)).ravel(), (np.sin(t) * np.sin(a)).ravel(),
                         np.cos(t).ravel()])
    values = 1.0 + real_spherical_harmonics(v, lmax) @ np.asarray(p_abs, float)
    return polar, azimuth, values.reshape(t.shape)


def real_spherical_harmonics(unit_vectors, lmax: int) -> np.ndarray:
    """(N, lmax (lmax + 2)) orthonormal real spherical harmonics of unit vectors, l = 1..lmax,
    m = -l..l: sqrt(2) N_lm P_l^|m|(cos theta) cos(m phi) (m > 0), ... sin(|m| phi) (m < 0),
    N_l0 P_l(cos theta) (m = 0), associated Legendre functions by the standard recurrence
    (no Condon-Shortley phase)."""
    from math import factorial

    v = np.asarray(unit_vectors, float)
    x = np.clip(v[:, 2], -1.0, 1.0)
    sin_t = np.sqrt(np.maximum(1.0 - x * x, 0.0))
    azim = np.arctan2(v[:, 1], v[:, 0])
    # P[l][m] for 0 <= m <= l <= lmax
    p = {(0, 0): np.ones_like(x)}
    for m in range(1, lmax + 1):
        p[(m, m)] = (2 * m - 1) * sin_t * p[(m - 1, m - 1)]
    for m in range(0, lmax):
        p[(m + 1, m)] = (2 * m + 1) * x * p[(m, m)]
        for ll in range(m + 2, lmax + 1):
            p[(ll, m)] = ((2 * ll - 1) * x * p[(ll - 1, m)] - (ll + m - 1) * p[(ll - 2, m)]) / (ll - m)
    cols = []
    for ll in range(1, lmax + 1):
        for m in range(-ll, ll + 1):
            am = abs(m)
            norm = np.sqrt((2 * ll + 1) / (4 * np.pi) * factorial(ll - am) / factorial(ll + am))
            if m == 0:
                cols.append(norm * p[(ll, 0)])
            elif m > 0:
                cols.append(np.sqrt(2) * norm * p[(ll, am)] * np.cos(am * azim))
            else:
                cols.append(np.sqrt(2) * norm * p[(ll, am)] * np.sin(am * azim))
    return np.column_stack(cols) if cols else np.zeros((len(v), 0))


@dataclass
class ComponentData:
    """Per-reflection design of one sweep: the linear maps from parameters to term values."""

    scale: SmootherDesign           # C_scale = scale.value(p_scale)
    decay: SmootherDesign | None    # B = decay.value(p_decay)
    inv_two_d2: np.ndarray        # 1 / (2 d^2)
    harmonics: np.ndarray | None  # C_abs = 1 + harmonics @ p_abs

    def subset(self, sel) -> ComponentData:
        return ComponentData(self.scale.subset(sel),
                             None if self.decay is None else self.decay.subset(sel),
                             self.inv_two_d2[sel],
                             None if self.harmonics is None else self.harmonics[sel])


@dataclass
class SweepModel:
    """Parameters of one sweep's model (``kind`` physical or KB) and their layout."""

    kind: str
    phi_range: tuple[float, float]
    scale_interval: float
    decay_interval: float
    lmax: int
    surface_weight: float
    decay_restraint: float
    p_scale: np.ndarray
    p_decay: np.ndarray | None
    p_abs: np.ndarray | None
    sd: np.ndarray | None = None  # estimated standard deviations of all parameters
    #: rotation range (deg) of the reflections scaled, to place the smoothers as
    #: dials.scale 3.x does (:func:`smoother_design`); None: over the scan
    data_range: tuple[float, float] | None = None

    @classmethod
    def new(cls, kind, phi_range, scale_interval, decay_interval, lmax, surface_weight,
            decay_restraint, decay=True, absorption=True) -> SweepModel:
        if kind == "KB":
            return cls(kind, phi_range, scale_interval, decay_interval, 0, 0.0, decay_restraint,
                       np.ones(1), np.zeros(1) if decay else None, None)
        n_s = smoother_layout(phi_range, scale_interval)[0]
        n_d = smoother_layout(phi_range, decay_interval)[0]
        return cls(kind, phi_range, scale_interval, decay_interval, lmax if absorption else 0,
                   surface_weight, decay_restraint, np.ones(n_s),
                   np.zeros(n_d) if decay else None,
                   np.zeros(lmax * (lmax + 2)) if absorption and lmax > 0 else None)

    @property
    def parameters(self) -> np.ndarray:
        parts = [self.p_scale] + [p for p in (self.p_decay, self.p_abs) if p is not None]
        return np.concatenate(parts)

    def set_parameters(self, p: np.ndarray) -> None:
        n = len(self.p_scale)
        self.p_scale = p[:n].copy()
        if self.p_decay is not None:
            self.p_decay = p[n:n + len(self.p_decay)].copy()
            n += len(self.p_decay)
        if self.p_abs is not None:
            self.p_abs = p[n:n + len(self.p_abs)].copy()

    @property
    def n_parameters(self) -> int:
        return len(self.parameters)

    def design(self, phi_deg, d, s0_crystal, s1_crystal) -> ComponentData:
        """The per-reflection design for reflections at ``phi_deg`` (deg), ``d`` (A), beam
        directions in the crystal frame (unit vectors)."""
        n = len(phi_deg)
        if self.kind == "KB":
            one = SmootherDesign(np.zeros((n, 1), np.int64), np.ones((n, 1)), 1)
            return ComponentData(one, one if self.p_decay is not None else None,
                                 1 / (2 * d ** 2), None)
        scale = smoother_design(phi_deg, self.phi_range, self.scale_interval, self.data_range)
        decay = smoother_design(phi_deg, self.phi_range, self.decay_interval, self.data_range) \
            if self.p_decay is not None else None
        harm = None
        if self.p_abs is not None:
            harm = 0.5 * (real_spherical_harmonics(s0_crystal, self.lmax)
                          + real_spherical_harmonics(s1_crystal, self.lmax))
        return ComponentData(scale, decay, 1 / (2 * d ** 2), harm)

    def _terms(self, c: ComponentData):
        s = c.scale.value(self.p_scale)
        g = s.copy()
        a = None
        if c.decay is not None:
            g *= np.exp(c.decay.value(self.p_decay) * c.inv_two_d2)
        if c.harmonics is not None:
            a = 1.0 + c.harmonics @ self.p_abs
            g *= a
        return g, s, a

    def evaluate(self, c: ComponentData, jacobian: bool = False):
        """g (N,) and, if asked, dg/dp as a dense (N, n_parameters) array (a sweep's
        parameters are few; rows depend on their own sweep only)."""
        g, s, a = self._terms(c)
        if not jacobian:
            return g
        n = len(g)
        jac = np.zeros((n, self.n_parameters))
        rows = np.arange(n)[:, None]
        jac[rows, c.scale.index] = c.scale.weight * (g / s)[:, None]
        lo = len(self.p_scale)
        if c.decay is not None:
            jac[rows, lo + c.decay.index] = c.decay.weight * (g * c.inv_two_d2)[:, None]
            lo += len(self.p_decay)
        if c.harmonics is not None:
            jac[:, lo:] = c.harmonics * (g / a)[:, None]
        return g, jac

    def normal_equations(self, c: ComponentData, factor, w, r=None):
        """J^T W J and J^T W r for J = factor * dg/dp (rows scaled by ``factor``)."""
        jr = self.evaluate(c, jacobian=True)[1] * factor[:, None]
        return jr.T @ (jr * w[:, None]), (None if r is None else jr.T @ (w * r))

    def g_variance(self, c: ComponentData, cov) -> np.ndarray:
        """Variance of each g from the parameter covariance ``cov``: j^T C j."""
        jac = self.evaluate(c, jacobian=True)[1]
        return np.einsum("ij,ij->i", jac @ cov, jac)

    def gradient(self, c: ComponentData, v: np.ndarray):
        """g (N,) and (dg/dp)^T v without forming the Jacobian."""
        g, s, a = self._terms(c)
        out = [c.scale.transpose_dot(v * g / s)]
        if c.decay is not None:
            out.append(c.decay.transpose_dot(v * g * c.inv_two_d2))
        if c.harmonics is not None:
            out.append(c.harmonics.T @ (v * g / a))
        return g, np.concatenate(out)

    def rescale(self, factor: float) -> None:
        """Multiply every g by ``factor`` (the scale parameters)."""
        self.p_scale = self.p_scale * factor

    def summary_cells(self) -> list:
        """(model, N scale, N decay, N absorption, scale range, B range) for the summary."""
        return [self.kind, len(self.p_scale), 0 if self.p_decay is None else len(self.p_decay),
                0 if self.p_abs is None else len(self.p_abs),
                f"{self.p_scale.min():.3f}-{self.p_scale.max():.3f}",
                "-" if self.p_decay is None else f"{self.p_decay.min():.2f}-{self.p_decay.max():.2f}"]

    def restraint(self, jacobian: bool = False):
        """Restraint residual sum(w p^2) on absorption and B parameters (and its gradient)."""
        grad = np.zeros(self.n_parameters)
        value = 0.0
        n = len(self.p_scale)
        if self.p_decay is not None:
            value += self.decay_restraint * np.sum(self.p_decay ** 2)
            grad[n:n + len(self.p_decay)] = 2 * self.decay_restraint * self.p_decay
            n += len(self.p_decay)
        if self.p_abs is not None:
            value += self.surface_weight * np.sum(self.p_abs ** 2)
            grad[n:] = 2 * self.surface_weight * self.p_abs
        return (value, grad) if jacobian else value

    def restraint_curvature(self) -> np.ndarray:
        """Diagonal of the restraint's Hessian / 2."""
        c = np.zeros(self.n_parameters)
        n = len(self.p_scale)
        if self.p_decay is not None:
            c[n:n + len(self.p_decay)] = self.decay_restraint
            n += len(self.p_decay)
        if self.p_abs is not None:
            c[n:] = self.surface_weight
        return c

    def to_dict(self, error_model: tuple[float, float] | None, valid_image_range,
                imid: float | None, oscillation_width: float = 1.0) -> dict:
        """The model as DIALS stores it in an .expt ``scaling_model`` entry."""
        sd = self.sd if self.sd is not None else np.zeros(self.n_parameters)
        out: dict = {"__id__": "physical" if self.kind == "physical" else "KB", "is_scaled": True}
        names = []
        n = 0
        for name, p in (("scale", self.p_scale), ("decay", self.p_decay),
                        ("absorption", self.p_abs)):
            if p is None:
                continue
            out[name] = {"n_parameters": len(p), "parameters": [float(x) for x in p],
                         "null_parameter_value": 1.0 if name == "scale" else 0.0,
                         "est_standard_devs": [float(x) for x in sd[n:n + len(p)]]}
            n += len(p)
            names.append(name)
        cfg: dict = {"corrections": names, "valid_image_range": list(valid_image_range),
                     "valid_osc_range": list(self.phi_range), GONIO_MODEL: True}
        if imid is not None:
            cfg["Imid"] = imid
        if error_model is not None:
            cfg["error_model_type"] = "BasicErrorModel"
            cfg["error_model_parameters"] = [float(error_model[0]), float(error_model[1])]
        if self.kind == "physical":
            # DIALS normalises phi by the interval in images: *_norm_fac = osc width / interval
            cfg["scale_rot_interval"] = smoother_layout(self.phi_range, self.scale_interval)[1]
            cfg["s_norm_fac"] = abs(oscillation_width) / cfg["scale_rot_interval"]
            if self.p_decay is not None:
                cfg["decay_rot_interval"] = smoother_layout(self.phi_range, self.decay_interval)[1]
                cfg["d_norm_fac"] = abs(oscillation_width) / cfg["decay_rot_interval"]
            if self.p_abs is not None:
                cfg["lmax"] = self.lmax
                cfg["abs_surface_weight"] = self.surface_weight
                # which harmonics the absorption parameters multiply (DIALS ignores the key);
                # the report draws the surface only for models that name them
                cfg["gonio_harmonics"] = HARMONICS
        out["configuration_parameters"] = cfg
        return out
