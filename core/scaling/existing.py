"""Continuing from a sweep's existing scaling model (dials.scale's ``overwrite_existing_models``).

dials.scale run on experiments that already carry scaling models keeps those models and
refines them further, unless ``overwrite_existing_models=True`` (DIALS's
``create_scaling_model``; xia2 scales again at its resolution limit this way). gonio does
the same, but only from a model that gonio refined (marked :data:`GONIO_MODEL` in its
configuration) and whose layout is the one the current parameters ask for: the same model
kind, corrections and numbers of parameters, and the same configuration (rotation range,
image range, smoother intervals, lmax, the array model's grids). The absorption restraint
(``surface_weight``) may change, as in DIALS's model update. A model read from a DIALS .expt
starts afresh: its absorption harmonics and smoother placement differ from gonio's in
details, so its parameters would not mean the same. gonio's error model is refined afresh in
each run (the default leave-one-out fit has no starting point to continue from).
"""

from __future__ import annotations

import math

import numpy as np

from gonio.core.scaling.model import GONIO_MODEL

#: configuration entries that may differ between the existing model and the new layout
_FREE = frozenset({"error_model_type", "error_model_parameters", "Imid", "abs_surface_weight"})


def _same(a, b) -> bool:
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(b, bool) or isinstance(b, str) or b is None:
        return a == b
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def continue_from_existing(model, experiment) -> bool:
    """Set ``model``'s parameters (a new :class:`~gonio.core.scaling.model.SweepModel` or
    :class:`~gonio.core.scaling.array_model.ArraySweepModel` for ``experiment``) to those of
    the experiment's existing scaling model when gonio made it with the same layout (see the
    module text); True if it did, False (``model`` untouched) otherwise."""
    old = experiment.scaling_model
    if not isinstance(old, dict) or not (old.get("configuration_parameters") or {}).get(
            GONIO_MODEL):
        return False
    scan = experiment.scan
    new = model.to_dict(None, scan.image_range, None, scan.oscillation[1])
    old_cfg, new_cfg = old["configuration_parameters"], new["configuration_parameters"]
    if old.get("__id__") != new["__id__"] or any(
            key not in old_cfg or not _same(old_cfg[key], value)
            for key, value in new_cfg.items() if key not in _FREE):
        return False
    values = []
    for name in new_cfg["corrections"]:
        part = old.get(name) or {}
        if part.get("n_parameters") != new[name]["n_parameters"] or \
                len(part.get("parameters", ())) != new[name]["n_parameters"]:
            return False
        values.append(np.asarray(part["parameters"], float))
    start = np.concatenate(values)
    if not np.all(np.isfinite(start)):
        return False
    model.set_parameters(start)
    return True
