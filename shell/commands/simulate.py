"""The ``simulate`` command: write a simulated sweep with known truth (gonio.core.simulate)."""

from __future__ import annotations

import dataclasses

from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param


def _type_of(default, f) -> tuple[str, dict]:
    meta = f.metadata
    ann = str(f.type)
    if meta.get("choices"):
        return "choice", {"choices": meta["choices"]}
    if ann.startswith("bool"):
        return "bool", {}
    if ann.startswith("int"):
        return "int", {}
    if ann.startswith("float"):
        return "float", {}
    if ann.startswith("tuple"):
        n = {"unit_cell": None}.get(f.name, len(default) if isinstance(default, tuple) else None)
        if f.name == "unit_cell":
            return "unit_cell", {}
        return "floats", ({"length": n} if n else {})
    return "str", {}


def params() -> list[Param]:
    from gonio.core.simulate.params import PRESETS, SimulationParams

    out = []
    for f in dataclasses.fields(SimulationParams):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        ptype, kw = _type_of(default, f)
        if f.name == "preset":
            ptype, kw = "choice", {"choices": tuple(sorted(PRESETS))}
        if f.name == "space_group":
            ptype = "space_group"
        allow_none = default is None or "None" in str(f.type)
        out.append(Param(f.name, ptype, default, f.metadata.get("help", ""),
                         units=f.metadata.get("units", ""), allow_none=allow_none, **kw))
    return out


def run(ctx: Context, parsed) -> Outcome:
    from pathlib import Path

    from gonio.core.simulate import simulate
    from gonio.core.simulate.params import SimulationParams

    explicit = {name: parsed.values[name] for name in parsed.explicit}
    explicit = {k: (tuple(v) if isinstance(v, list) else v) for k, v in explicit.items()}
    if not explicit.get("output"):
        explicit["output"] = "sim"
    out = Path(explicit["output"])
    if not out.is_absolute():
        explicit["output"] = str(Path(ctx.cwd) / out)
    result = simulate(SimulationParams(**explicit), progress=ctx.progress)
    text = result.summary() if hasattr(result, "summary") else f"Wrote {explicit['output']}"
    return Outcome(text=text)
