"""Table 4 of the RD coefficient analysis and its comparison with the paper's.

The paper's coefficients (:data:`PAPER_TABLE4`), our table in the paper's layout (csv and
markdown) and the side-by-side comparison with the models' frequency invariants
(table4_vs_paper.md). Split out of :mod:`eae.experiments.rd.analysis` (which re-exports
every name here).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from eae.experiments.rd.analysis_params import DOT, AnalysisParams
from eae.experiments.rd.frequency import linear_invariants

#: The paper's Table 4 (mean, mode) per (latent, term), in library order.
PAPER_TABLE4 = {
    "z1": {"z1": (0.47, 0.48), "z2": (1.00, 1.17), "z1^2": (0.00, 0.00), "z1 z2": (0.00, 0.00),
           "z2^2": (-0.03, -0.01), "z1^3": (0.00, -0.01), "z1^2 z2": (-0.02, -0.03),
           "z1 z2^2": (-0.03, -0.03), "z2^3": (0.03, 0.02), "sin(z1)": (0.36, 0.31),
           "sin(z2)": (0.86, 0.81)},
    "z2": {"z1": (-1.98, -1.98), "z2": (-1.37, -0.38), "z1^2": (0.01, 0.00),
           "z1 z2": (-0.03, -0.03), "z2^2": (-0.03, -0.01), "z1^3": (-0.05, -0.07),
           "z1^2 z2": (0.09, -0.03), "z1 z2^2": (0.14, -0.03), "z2^3": (0.09, 0.02),
           "sin(z1)": (0.13, 0.31), "sin(z2)": (0.11, 0.85)},
}


def table4(summary: pd.DataFrame, robust: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's layout: rows = library terms, columns per latent derivative
    (``z1dot_mean``, ``z1dot_mode``, ``z1dot_significant``, ``z2dot_…``); with
    ``robust`` (:func:`eae.experiments.rd.identifiability.robustness`) also ``z1dot_status``
    ("robust" / "depends": whether the significance survives other ridges, a constant
    term and centred codes)."""
    terms = list(dict.fromkeys(summary["term"]))
    out = pd.DataFrame({"term": terms})
    for lat in dict.fromkeys(summary["latent"]):
        part = summary[summary["latent"] == lat].set_index("term").loc[terms]
        out[f"{lat}dot_mean"] = part["mean"].to_numpy()
        out[f"{lat}dot_mode"] = part["mode"].to_numpy()
        out[f"{lat}dot_significant"] = part["significant"].to_numpy()
        if robust is not None:
            status = robust[robust["latent"] == lat].set_index("term")["status"]
            out[f"{lat}dot_status"] = [status.get(t, "not tested") for t in terms]
    return out


def table4_markdown(table: pd.DataFrame, threshold: float, digits: int = 2,
                    notes: Sequence[str] = ()) -> str:
    """Markdown rendering of :func:`table4`; significant coefficients in bold, † where
    the significance depends on the ridge / constant term / centring; ``notes`` are
    appended as bullet points."""
    latents = [c[: -len("dot_mean")] for c in table.columns if c.endswith("dot_mean")]
    header = ["term"] + [f"{lat}{DOT} {w}" for lat in latents for w in ("mean", "mode")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [f"{row['term']}"]
        for lat in latents:
            bold = bool(row[f"{lat}dot_significant"])
            dagger = " †" if row.get(f"{lat}dot_status") == "depends" else ""
            for w in ("mean", "mode"):
                text = f"{row[f'{lat}dot_{w}']:.{digits}f}"
                cells.append((f"**{text}**" if bold else text) + (dagger if w == "mode" else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Ensemble mean and dominant mode (Gaussian KDE) of each coefficient; bold: "
                 f"both exceed {threshold:g} in magnitude (significant).")
    if any(c.endswith("dot_status") for c in table.columns):
        lines.append("†: significance depends on the solve's choices (ridge 0 … 0.1, a constant "
                     "term, centred codes; see table4_identifiability.md): the data do not fix "
                     "this coefficient.")
    lines += [""] + [f"- {n}" for n in notes] if notes else []
    return "\n".join(lines) + "\n"


def paper_model(which: str, terms: Sequence[str], latents: Sequence[str]) -> np.ndarray:
    """Ξ of the paper's Table 4 ("mean" or "mode")."""
    k = 0 if which == "mean" else 1
    return np.array([[PAPER_TABLE4[lat][t][k] for lat in latents] for t in terms])


def table4_vs_paper(result: Mapping, params: AnalysisParams) -> str:
    """Markdown: our Table 4 (mean / mode, significance, robustness) beside the paper's,
    the invariants of each model, and each integrated model's ω against the simulation's."""
    terms, latents, table = result["terms"], result["latents"], result["table"]
    freq = result["frequency"]
    sim = float(freq.loc[0, "omega"])
    header = ["term"]
    for lat in latents:
        header += [f"{lat}{DOT} ours mean / mode", f"{lat}{DOT} paper mean / mode"]
    lines = ["# Table 4: this run beside the paper", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["term"]]
        for lat in latents:
            mean, mode = row[f"{lat}dot_mean"], row[f"{lat}dot_mode"]
            text = f"{mean:.2f} / {mode:.2f}"
            if row[f"{lat}dot_significant"]:
                text = f"**{text}**"
            if row.get(f"{lat}dot_status") == "depends":
                text += " †"
            pm, pmode = PAPER_TABLE4[lat].get(row["term"], (math.nan, math.nan))
            ptext = f"{pm:.2f} / {pmode:.2f}"
            cells += [text, f"**{ptext}**" if abs(pm) > params.threshold and abs(pmode) > params.threshold else ptext]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Bold: |mean| and |mode| > {params.threshold:g} (significant); †: the "
              "significance depends on the ridge, a constant term or centring "
              "(table4_identifiability.md). Latents are defined up to scale, sign and "
              "permutation, so compare the invariants below, not raw coefficients.", "",
              "## Invariants (rad per time unit)", "",
              f"Simulation: ω = {sim:.4g}.", "",
              "| model | ω linear block | sqrt(−ξ[z2,ż1]·ξ[z1,ż2]) | ω Jacobian at 0 (linear + sine) | ω integrated | vs simulation |",
              "|---|---|---|---|---|---|"]
    integrated = freq[freq["method"] == "integrated trajectory, sinusoid fit"].set_index("source")["omega"]
    models = {f"ours: {name}": xi for name, xi in result["all_models"].items()}
    models.update({"paper: mean model": paper_model("mean", terms, latents),
                   "paper: mode model": paper_model("mode", terms, latents)})
    for name, xi in models.items():
        inv = linear_invariants(xi, terms, latents)
        key = name.removeprefix("ours: ")
        omega = float(integrated.get(key, math.nan)) if name.startswith("ours") else math.nan
        err = (omega - sim) / sim if np.isfinite(omega) else math.nan
        verdict = ("—" if not np.isfinite(err) else
                   f"{100 * err:+.1f} % ({'reproduces' if abs(err) <= params.omega_tolerance else '**does not reproduce**'})")
        lines.append(f"| {name} | {_f(inv['linear'])} | {_f(inv['cross'])} | {_f(inv['jacobian'])} | "
                     f"{_f(omega)} | {verdict} |")
    lines += ["", "The paper's models are not integrated here: their latents live on the "
              "paper's (unknown) code scale, so no initial condition of ours is theirs; their "
              "linear-block invariants are scale-free for the linear terms only.",
              f"A model reproduces the dynamics when its integrated ω is within "
              f"{100 * params.omega_tolerance:g} % of the simulation's (rd.analysis.omega_tolerance)."]
    return "\n".join(lines) + "\n"


def _f(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.4g}"
