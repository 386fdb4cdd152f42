"""``refine_bravais_settings`` (rbs) and ``reindex`` (dials.refine_bravais_settings, dials.reindex).

rbs keeps every solution in the step (its refined models, cb_op and the
table) as the ``rbs`` data of the state, so ``reindex solution=N`` takes one
later without recomputing.
"""

from __future__ import annotations

from tabulate import tabulate

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param


class RbsInputError(GonioError):
    pass


def rbs_params() -> list[Param]:
    return [
        Param("lepage_max_delta", "float", 5.0, "largest Le Page angle (metric fit) of a "
              "lattice twofold axis", units="deg", min=0, min_exclusive=True),
        Param("best_monoclinic_beta", "bool", True, "for a centred monoclinic lattice prefer "
              "the C2 or I2 cell with beta closest to 90 deg (False keeps C2)"),
        Param("experiment_id", "int", None, "which lattice of a multi-lattice index", min=0),
        Param("max_refine_reflections", "int", 5000, "random subset of indexed spots refined "
              "for each candidate (None: the refinement's own sampling)", min=100,
              expert_level=1),
        Param("random_seed", "int", 0, "seed of the random subset", expert_level=1),
        *_refinement_params(),
    ]


def _refinement_params() -> list[Param]:
    """The refinement parameters each candidate is refined with (as for index)."""
    from gonio.core.refinement.params import RefinementParams
    from gonio.shell.commands.index import OVERRIDES
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(RefinementParams, overrides=OVERRIDES)


def reindex_params() -> list[Param]:
    return [
        Param("solution", "int", None, "take solution N of the last rbs", min=1),
        Param("change_of_basis_op", "cb_op", None, "operator for the crystals and Miller "
              "indices, e.g. a-2*b,a,c"),
        Param("space_group", "space_group", None, "space group to set (after the change of basis)"),
        Param("reference", "path", None, "bring the data onto the indexing of this reference "
              ".expt (DIALS: reference.experiments)"),
        Param("reference_reflections", "path", None, "reference reflections, to resolve indexing "
              "ambiguities by intensity correlation (DIALS: reference.reflections)"),
    ]


def _indexed(state):
    table = state.reflections.get("indexed")
    if table is None or not any(e.crystal is not None for e in state.experiments):
        raise RbsInputError("There is no indexed solution yet: run index first (rbs and reindex "
                            "work on the indexed reflections and crystal models).")
    return table


def run_rbs(ctx: Context, parsed) -> Outcome:
    import numpy as np

    from gonio.core.io.dials_expt import experiments_to_dict
    from gonio.core.lattice.rbs import RbsParams, refine_bravais_settings
    from gonio.core.refinement.params import RefinementParams
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    indexed = _indexed(state)
    v = parsed.values
    p = RbsParams(max_delta=v["lepage_max_delta"], best_monoclinic_beta=v["best_monoclinic_beta"],
                  experiment_id=v["experiment_id"], max_refine_reflections=v["max_refine_reflections"],
                  random_seed=v["random_seed"],
                  refinement=dataclass_from_values(RefinementParams, v))
    result = refine_bravais_settings(state.experiments, indexed, p)
    table = tabulate(result.table(), headers=result.headers, disable_numparse=True)
    lines = [table, "", "* = recommended solution (as DIALS judges: metric fit and rmsd)."]
    for s in result.solutions:
        if getattr(s, "chiral_space_groups", None):
            lines.append(f"  {s.number:>3} {s.lattice}: {', '.join(s.chiral_space_groups)}")
    stored = {
        "summary": result.as_dict(),
        "experiment_id": v["experiment_id"],
        "solutions": {
            str(s.number): {
                "P": np.asarray(s.setting.P, dtype=float).tolist(),
                "cb_op": s.cb_op,
                "lattice": s.lattice,
                "experiments": experiments_to_dict(s.experiments) if s.experiments is not None else None,
            } for s in result.solutions
        },
    }
    best = max((s for s in result.solutions if s.recommended), key=lambda s: s.number, default=None)
    metrics = {"solutions": len(result.solutions)}
    if best is not None:
        metrics["best recommended"] = f"{best.number} {best.lattice}"
        lines.append(f"\nThe highest-symmetry recommended solution is {best.number} ({best.lattice}): "
                     f"reindex solution={best.number} takes it.")
    return Outcome(state=state.evolve(data={"rbs": stored}), text="\n".join(lines), metrics=metrics)


def run_reindex(ctx: Context, parsed) -> Outcome:
    import numpy as np

    from gonio.core.io.dials_expt import experiments_from_dict, read_expt
    from gonio.core.lattice.reindex import reindex, reindex_to_reference

    state = ctx.state
    v = parsed.values
    indexed = _indexed(state)
    if v["solution"] is not None:
        rbs = state.data.get("rbs")
        if rbs is None:
            raise RbsInputError("reindex solution=N takes a solution of refine_bravais_settings: "
                                "run rbs first.")
        sol = rbs["solutions"].get(str(v["solution"]))
        if sol is None:
            numbers = ", ".join(sorted(rbs["solutions"], key=int))
            raise RbsInputError(f"There is no solution {v['solution']} in the last rbs table; "
                                f"the solutions are {numbers}.")
        if sol["experiments"] is None:
            raise RbsInputError(f"Solution {v['solution']} could not be refined, so it has no "
                                "models; choose another solution.")
        sol_expts = experiments_from_dict(sol["experiments"])
        P = np.array(sol["P"])
        _, table = reindex(state.experiments, indexed, P)
        experiments = sol_expts  # the models refined in that setting, as DIALS's bravais_setting_N.expt
        if v["space_group"] is not None:
            experiments, table = reindex(experiments, table, None, v["space_group"])
        text = f"Reindexed with solution {v['solution']} ({sol['lattice']}, cb_op {sol['cb_op']})"
    elif v["reference"] is not None:
        from pathlib import Path

        from gonio.core.io.dials_refl import read_refl

        ref = Path(ctx.cwd) / v["reference"]
        ref_refl = v["reference_reflections"]
        for p in [ref] + ([Path(ctx.cwd) / ref_refl] if ref_refl else []):
            if not p.is_file():
                raise RbsInputError(f"{p}: no such file; give the reference .expt (and .refl) "
                                    "written by save or by DIALS.")
        experiments, table, match = reindex_to_reference(
            state.experiments, indexed, read_expt(ref),
            read_refl(Path(ctx.cwd) / ref_refl) if ref_refl else None)
        text = f"Reindexed onto the reference {ref}: {match}"
    else:
        if v["change_of_basis_op"] is None and v["space_group"] is None:
            raise RbsInputError("reindex needs solution=N, change_of_basis_op=..., space_group=... "
                                "or reference=other.expt.")
        experiments, table = reindex(state.experiments, indexed, v["change_of_basis_op"],
                                     v["space_group"])
        text = f"Reindexed with change_of_basis_op={v['change_of_basis_op'] or 'a,b,c'}" + (
            f", space group {v['space_group']}" if v["space_group"] else "")
    cells = []
    for e in experiments:
        if e.crystal is not None:
            c = e.crystal.unit_cell
            cells.append(f"{c.a:.3f} {c.b:.3f} {c.c:.3f} {c.alpha:.2f} {c.beta:.2f} {c.gamma:.2f} "
                         f"{e.crystal.space_group.hm}")
    text += "\n" + "\n".join(f"crystal {i}: {c}" for i, c in enumerate(cells))
    metrics = {"cell": cells[0] if cells else ""}
    return Outcome(state=state.evolve(experiments=experiments, reflections={"indexed": table}),
                   text=text, metrics=metrics)
