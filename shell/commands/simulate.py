"""The ``simulate`` command: write a simulated sweep with known truth (gonio.core.simulate).

Parameters come from the fields of :class:`SimulationParams` (their metadata
gives the command-line name, kind, help and units); a preset supplies values
underneath the ones given on the line.
"""

from __future__ import annotations

import dataclasses

from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

_KIND = {"int": "int", "float": "float", "bool": "bool", "str": "str", "path": "path",
         "choice": "choice", "space_group": "space_group"}


def _param(f) -> Param:
    meta = f.metadata
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = meta.get("kind", "str")
    kw = {}
    if ":" in kind:  # e.g. floats:6, ints:2
        kind, n = kind.split(":")
        kw["length"] = int(n)
    if kind == "choice":
        kw["choices"] = tuple(meta["choices"])
    ptype = _KIND.get(kind, kind)
    return Param(meta.get("name", f.name), ptype, default, meta.get("help", ""),
                 units=meta.get("units", ""), allow_none=default is None or "None" in str(f.type),
                 **kw)


def params() -> list[Param]:
    from gonio.core.simulate.params import SimulationParams

    return [_param(f) for f in dataclasses.fields(SimulationParams)]


def run(ctx: Context, parsed) -> Outcome:
    from pathlib import Path

    from gonio.core.simulate import simulate
    from gonio.core.simulate.params import SimulationParams

    by_name = {f.metadata.get("name", f.name): f.name for f in dataclasses.fields(SimulationParams)}
    explicit = {}
    for name in parsed.explicit:
        v = parsed.values[name]
        explicit[by_name[name]] = tuple(v) if isinstance(v, list) else v
    out = Path(explicit.get("output") or "sim")
    explicit["output"] = str(out if out.is_absolute() else Path(ctx.cwd) / out)
    preset = explicit.pop("preset", None)
    params = SimulationParams.from_preset(preset, **explicit)

    result = simulate(params, progress=ctx.progress)
    # recorded as a step (the state is unchanged) so that scripts and replay make the data too
    return Outcome(state=ctx.state, text=result.summary(), metrics={"images written": params.n_images})
