"""The ``symmetry`` command: Laue group, space group and reindexing (dials.symmetry).

Works on the newest of the ``scaled``, ``symmetrized`` and ``integrated`` tables
(gonio's own or imported DIALS files) with all experiments together, prints the
tables dials.symmetry prints, and stores the reindexed reflections as
``symmetrized`` (``save`` writes symmetrized.expt / symmetrized.refl). When the
data are reindexed (cb_op not a,b,c) the input table, whose indices no longer match
the crystal models, is replaced.
"""

from __future__ import annotations

from tabulate import tabulate

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

INPUT_TABLES = ("scaled", "symmetrized", "integrated")


class SymmetryCommandError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.symmetry.params import SymmetryParams
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(SymmetryParams)


def _input_table(state) -> str:
    names = [n for n in state.reflections if n in INPUT_TABLES]
    if not names or not any(e.crystal is not None for e in state.experiments):
        raise SymmetryCommandError(
            "There are no integrated intensities to analyse: run integrate first (or import "
            "DIALS integrated or scaled files, e.g. import integrated.expt integrated.refl).")
    return names[-1]  # the newest


def _stars(p: float, levels=(0.9, 0.7, 0.5)) -> str:
    return "***" if p > levels[0] else "**" if p > levels[1] else "*" if p > levels[2] else ""


def _cell(c) -> str:
    return ", ".join(f"{x:.3f}" for x in c.parameters)


def laue_group_text(res) -> str:
    L = res.laue
    lat = L.lattice
    lines = [
        "Input crystal symmetry:",
        f"Unit cell: ({_cell(res.median_cell)})",
        f"Space group: {res.input_space_group.xhm()} (No. {res.input_space_group.number})",
        f"Change of basis op to minimum cell: {lat.cb_op_inp_min}",
        f"Minimum cell: ({_cell(lat.minimum_cell)})",
        f"Lattice point group: {lat.lattice_group.patterson_group.xhm()}",
        f"Intensities: {res.intensity_column} ({res.n_observations} observations); "
        f"{L.n_reflections} unique reflections in the analysis",
        *res.resolution_lines,
        "",
        f"Overall CC for {L.cc_unrelated.n} unrelated pairs: {L.cc_unrelated.cc:.3f}",
        "Estimated expectation value of true correlation coefficient E(CC) = "
        f"{L.e_cc_true:.3f}",
        (f"Estimated sd(CC) = {L.cc_sig_fac:.3f} / sqrt(N)" if L.cc_sig_fac
         else "Too few reflections to estimate sd(CC)."),
        "Estimated E(CC) of true correlation coefficient from identity = "
        f"{L.cc_true:.3f}",
        "", "-" * 80, "", "Scoring individual symmetry elements", "",
        tabulate([[f"{e.likelihood:.3f}", f"{e.z_cc:.2f}", f"{e.cc.cc:.2f}", f"{e.n_refs}",
                   _stars(e.likelihood), e.name] for e in L.elements],
                 headers=["likelihood", "Z-CC", "CC", "N", "", "Operator"],
                 disable_numparse=True, colalign=("right",) * 4 + ("left",) * 2),
        "", "-" * 80, "", "Scoring all possible sub-groups", "",
        tabulate([[s.subgroup.patterson_group.xhm(), _stars(s.likelihood, (0.8, 0.6, 0.4)),
                   f"{s.likelihood:.3f}", f"{s.z_cc_net: .2f}", f"{s.z_cc_for: .2f}",
                   f"{s.z_cc_against: .2f}", f"{s.cc_for: .2f}", f"{s.cc_against: .2f}",
                   f"{s.subgroup.delta_deg:.1f}", s.subgroup.cb_op] for s in L.subgroups],
                 headers=["Patterson group", "", "Likelihood", "NetZcc", "Zcc+", "Zcc-", "CC",
                          "CC-", "delta", "Reindex operator"], disable_numparse=True,
                 colalign=("left", "left") + ("right",) * 7 + ("left",)),
        "",
        f"Best solution: {L.best.subgroup.patterson_group.xhm()}",
        f"Unit cell: {_cell(L.best.subgroup.best_cell)}",
        f"Reindex operator: {L.best.subgroup.cb_op}",
        f"Laue group probability: {L.best.likelihood:.3f}",
        f"Laue group confidence: {L.best.confidence:.3f}",
    ]
    if not any(e.n_refs > 2 for e in L.elements):
        lines.append("No symmetry-related pairs were measured: the data cannot tell the Laue "
                     "groups apart, and the lattice's own group is reported by default.")
    return "\n".join(lines)


def absences_text(a) -> str:
    lines = ["", "-" * 80, "", *a.lines]
    if a.tests:
        lines += _screw_axis_table(a)
    lines.append(f"Recommended space group: {a.best.xhm()}")
    if a.equivalent:
        others = ", ".join(sg.xhm() for sg in a.equivalent)
        if a.enantiomorphic:
            lines.append(f"Space group with equivalent score (enantiomorphic pair): {others}. "
                         "The intensities cannot tell the two hands apart; the structure "
                         "solution (or anomalous scattering) decides.")
        else:
            lines.append(f"Space group(s) with the same absences: {others}. The absences "
                         "cannot tell these apart.")
    return "\n".join(lines)


def _screw_axis_table(a) -> list[str]:
    lines = ["Scoring method: direct", tabulate(
        [[t.name, f"{t.score:.3f}", str(t.n_present), str(t.n_absent), f"{t.mean_i:.3f}",
          f"{t.mean_i_abs:.3f}", f"{t.mean_i_sigma:.3f}", f"{t.mean_i_sigma_abs:.3f}"]
         for t in a.tests],
        headers=["Screw axis", "Score", "No. present", "No. absent", "<I> present",
                 "<I> absent", "<I/sig> present", "<I/sig> absent"], disable_numparse=True,
        colalign=("left",) + ("right",) * 7)]
    lines += [f"{t.name}: {t.note}" for t in a.tests if t.note]
    lines += ["", tabulate([[sg.xhm(), f"{s:.4f}"] for sg, s in a.candidates],
                           headers=["Space group", "score"], disable_numparse=True), ""]
    return lines


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.symmetry import determine_symmetry
    from gonio.core.symmetry.params import SymmetryParams
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    name = _input_table(state)
    p = dataclass_from_values(SymmetryParams, parsed.values)
    experiments, table, res = determine_symmetry(state.experiments, state.reflections[name], p)
    text = laue_group_text(res)
    if res.absences is not None:
        text += "\n" + absences_text(res.absences)
    reindexed = res.cb_op != "a,b,c"
    c = experiments[0].crystal.unit_cell
    text += (f"\n\nSpace group {res.space_group.xhm()}, cell "
             f"{' '.join(f'{x:.4f}' for x in c.parameters)}; reflections reindexed with "
             f"{res.cb_op} into the table 'symmetrized'"
             + (f" (replacing '{name}')." if reindexed and name != "symmetrized" else "."))
    metrics = {"laue_group": res.laue_group.xhm(), "space_group": res.space_group.xhm(),
               "confidence": round(res.laue.best.confidence, 3),
               "likelihood": round(res.laue.best.likelihood, 3), "cb_op": res.cb_op}
    if res.absences is not None and res.absences.equivalent:
        metrics["same_absences"] = ", ".join(sg.xhm() for sg in res.absences.equivalent)
    drop = (name,) if reindexed and name != "symmetrized" else ()
    new_state = state.evolve(experiments=experiments, reflections={"symmetrized": table},
                             drop=drop)
    return Outcome(state=new_state, text=text, metrics=metrics)
