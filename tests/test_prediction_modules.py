"""core/prediction: rotation.py uses scan_varying.py and rays.py; they never import it back."""

from __future__ import annotations

import ast
from pathlib import Path

import gonio.core.prediction as prediction


def _imports(module_file: Path) -> set[str]:
    tree = ast.parse(module_file.read_text())
    return {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}


def test_no_import_cycle_between_rotation_and_scan_varying():
    folder = Path(prediction.__file__).parent
    assert "rotation" not in _imports(folder / "scan_varying.py")
    assert "rotation" not in _imports(folder / "rays.py")
    assert {"rays", "scan_varying"} <= _imports(folder / "rotation.py")


def test_public_names_still_importable_from_rotation():
    from gonio.core.prediction.rotation import (  # noqa: F401
        PredictionError,
        entering_flags,
        lab_rlp,
        predict_observed,
        predict_rotation,
        predict_scan_varying,
        rays_table,
        xyz_mm_to_px,
        zeta_factor,
    )
