"""Experiment and ExperimentList (DIALS conventions)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from .beam import Beam
from .crystal import Crystal
from .detector import Detector
from .goniometer import Goniometer
from .imageset import ImageSetRef
from .scan import Scan


@dataclass
class Experiment:
    beam: Beam | None = None
    detector: Detector | None = None
    goniometer: Goniometer | None = None
    scan: Scan | None = None
    crystal: Crystal | None = None
    imageset: ImageSetRef | None = None
    profile: dict | None = None  # e.g. {"__id__": "gaussian_rs", "sigma_b": .., "sigma_m": ..}
    scaling_model: dict | None = None
    identifier: str = field(default_factory=lambda: str(uuid.uuid4()))

    def replace(self, **kw) -> Experiment:
        return replace(self, **kw)

    @property
    def is_sweep(self) -> bool:
        return self.scan is not None and self.goniometer is not None and not self.scan.is_still


class ExperimentList(list):
    """A list of experiments; models may be shared between experiments."""

    def identifiers(self) -> list[str]:
        return [e.identifier for e in self]

    def crystals(self) -> list[Crystal]:
        return [e.crystal for e in self if e.crystal is not None]

    def imageset_numbers(self) -> list[int]:
        """The image set of each experiment, numbered in order of first appearance (an
        experiment without one counts as its own); several lattices on one sweep share a
        number."""
        seen: dict[int, int] = {}
        return [seen.setdefault(id(e.imageset) if e.imageset is not None else id(e), len(seen))
                for e in self]

    def imagesets(self) -> list[ImageSetRef]:
        seen, out = set(), []
        for e in self:
            if e.imageset is not None and id(e.imageset) not in seen:
                seen.add(id(e.imageset))
                out.append(e.imageset)
        return out
