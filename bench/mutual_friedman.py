"""The mutual-learning study over all its conditions: Demšar's blocked comparison of the methods.

Reads the ``mutual_all`` experiment (``labrun sweep mutual_all``: every problem at the quick
scale) and compares the four methods *within* each block, on
each problem's own headline test metric of model A (or B); a block is (problem, dataset,
condition, model pair): accuracy and mIoU higher is better,
relative L2 and MSE lower. A block ranks the methods on their mean over seeds, so metrics of
different units and directions never mix; across the blocks come the average ranks, Friedman
with Iman–Davenport, Nemenyi's critical difference and Holm against ``independent``
(:func:`analysis.blocked.compare_blocks`, the same code as ``labrun analyze --compare-by``).
Prints a Markdown table and writes the CD diagram. Asserts nothing.

    python bench/mutual_friedman.py                     # model A, experiment mutual_all
    python bench/mutual_friedman.py --model b --out docs/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADLINE = {"classification": ("accuracy", "max"), "operator": ("rel_l2", "min"),
            "timeseries": ("mse", "min"), "segmentation": ("miou", "max")}


def blocked_frame(experiment: str, model: str):
    """One row per run: method, block and a score where higher is better (the headline, its
    sign flipped for the lower-is-better metrics)."""
    import numpy as np
    import pandas as pd

    from analysis.query import runs_frame

    frame = runs_frame(experiment, filter="status=FINISHED")
    rows = []
    for problem, (key, direction) in HEADLINE.items():
        part = frame[frame["mutual.problem"] == problem]
        col = f"final.metric.{model}.{key}.test"
        if part.empty or col not in part:
            continue
        score = pd.to_numeric(part[col], errors="coerce") * (1.0 if direction == "max" else -1.0)
        rows.append(pd.DataFrame({
            "method": part["labrun.method"].to_numpy(),
            "block": (problem + " | " + part["mutual.dataset"].astype(str) + " | "
                      + part["labrun.condition"].astype(str) + " | "
                      + part["mutual.model_a"].astype(str) + "/" + part["mutual.model_b"].astype(str)).to_numpy(),
            "score": score.to_numpy()}))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["method", "block", "score"])
    return out[np.isfinite(out["score"].astype(float))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="mutual_all")
    p.add_argument("--model", choices=["a", "b"], default="a")
    p.add_argument("--control", default="independent")
    p.add_argument("--out", default=".", help="folder for the CD diagram (default: here)")
    a = p.parse_args()
    from analysis.blocked import cliques, compare_blocks
    from analysis.curves import plot_cd_diagram

    frame = blocked_frame(a.experiment, a.model)
    cmp = compare_blocks(frame, "score", method="method", block="block", direction="max", control=a.control)
    print(f"{a.experiment}: model {a.model.upper()}, {cmp.n_blocks} blocks x {cmp.n_methods} methods "
          f"({len(frame)} runs; blocks missing a method dropped: {len(cmp.dropped_blocks)})")
    if cmp.note:
        print(cmp.note)
        return
    print("\n| method | average rank | Holm p vs " + a.control + " |\n|---|---|---|")
    for m, r in cmp.mean_rank.items():
        holm = cmp.holm["holm_p"].get(m) if m in cmp.holm.index else None
        print(f"| {m} | {r:.2f} | {'control' if m == cmp.control else f'{holm:.3g}' if holm is not None else '-'} |")
    print(f"\nFriedman chi2 = {cmp.friedman_chi2:.2f} (p = {cmp.friedman_p:.3g}); Iman–Davenport F = "
          f"{cmp.iman_davenport_f:.2f} (p = {cmp.iman_davenport_p:.3g}); Nemenyi CD = {cmp.cd:.2f} at alpha 0.05")
    print("groups Nemenyi does not separate: " + "; ".join(", ".join(c) for c in cliques(cmp.mean_rank, cmp.cd)))
    path = plot_cd_diagram(cmp.mean_rank, cmp.nemenyi_p, cmp.cd, f"model {a.model.upper()}'s headline test metric",
                           cmp.n_blocks, Path(a.out) / f"mutual_all_cd_{a.model}.png")
    print(f"CD diagram: {path}")


if __name__ == "__main__":
    main()
