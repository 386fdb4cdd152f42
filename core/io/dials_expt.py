"""DIALS experiment-list files (.expt, JSON).

Layout: ``{"__id__": "ExperimentList", "experiment": [{"beam": i, ...}],
"imageset": [...], "beam": [...], "detector": [...], "goniometer": [...],
"scan": [...], "crystal": [...], "profile": [...], "scaling_model": [...]}``
where each experiment refers to its models by index, so experiments can
share models. Models shared in memory (the same object) are written once.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import GonioError
from ..models.beam import Beam
from ..models.crystal import Crystal
from ..models.detector import Detector
from ..models.experiment import Experiment, ExperimentList
from ..models.goniometer import Goniometer
from ..models.imageset import ImageSetRef
from ..models.scan import Scan
from .atomic import write_atomic

_MODELS = {
    "beam": Beam,
    "detector": Detector,
    "goniometer": Goniometer,
    "scan": Scan,
    "crystal": Crystal,
    "imageset": ImageSetRef,
}


class ExperimentFileError(GonioError):
    pass


def experiments_from_dict(d: dict, source: str = "experiment list") -> ExperimentList:
    if not isinstance(d, dict) or d.get("__id__") != "ExperimentList":
        raise ExperimentFileError(
            f"{source} is not a DIALS experiment list (its top level has no "
            '"__id__": "ExperimentList"). gonio reads .expt files written by DIALS or gonio; '
            "check the file name, or import the images themselves."
        )
    try:
        pools = {}
        for key, cls in _MODELS.items():
            pools[key] = [cls.from_dict(m) for m in d.get(key, [])]
        pools["profile"] = list(d.get("profile", []))
        pools["scaling_model"] = list(d.get("scaling_model", []))
        out = ExperimentList()
        for e in d.get("experiment", []):
            kw = {}
            for key in list(_MODELS) + ["profile", "scaling_model"]:
                idx = e.get(key)
                kw[key] = pools[key][idx] if idx is not None else None
            out.append(Experiment(identifier=e.get("identifier", ""), **kw))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ExperimentFileError(
            f"{source} looks like a DIALS experiment list but could not be read ({type(err).__name__}: "
            f"{err}). It may come from a newer DIALS with a different layout; re-export it with "
            "dials.export or import the images instead."
        ) from None
    return out


def experiments_to_dict(experiments: ExperimentList) -> dict:
    pools = {k: [] for k in list(_MODELS) + ["profile", "scaling_model"]}
    index = {k: {} for k in pools}
    exps = []
    for e in experiments:
        entry = {"__id__": "Experiment", "identifier": e.identifier}
        for key in ["beam", "detector", "goniometer", "scan", "crystal", "profile",
                    "scaling_model", "imageset"]:
            model = getattr(e, key)
            if model is None:
                continue
            if id(model) not in index[key]:
                index[key][id(model)] = len(pools[key])
                pools[key].append(model if key in ("profile", "scaling_model") else model.to_dict())
            entry[key] = index[key][id(model)]
        exps.append(entry)
    return {"__id__": "ExperimentList", "experiment": exps, **pools}


def read_expt(path) -> ExperimentList:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ExperimentFileError(f"{path}: no such file.") from None
    except UnicodeDecodeError:
        raise ExperimentFileError(f"{path} is not a text (JSON) DIALS experiment list.") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise ExperimentFileError(
            f"{path} is not valid JSON ({err}); a DIALS .expt file is JSON. The file may be "
            "truncated or of another kind."
        ) from None
    return experiments_from_dict(d, str(path))


def expt_to_bytes(experiments: ExperimentList) -> bytes:
    return json.dumps(experiments_to_dict(experiments), indent=2).encode()


def expt_from_bytes(data: bytes) -> ExperimentList:
    return experiments_from_dict(json.loads(data), "stored experiment list")


def write_expt(experiments: ExperimentList, path) -> None:
    """Write atomically (temporary file in the same folder, then rename)."""
    write_atomic(path, expt_to_bytes(experiments))
