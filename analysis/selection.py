"""Which runs an analysis reads, and what each group is called.

Only FINISHED task runs that logged the metric count, one per fingerprint; everything left
out is counted by reason so the output can say so. A group's label is what a reader
recognises: the method (and condition) of a cell, made unique by the params that differ.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from analysis import tables
from tracking import tags as T
from tracking.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def select(frame: "pd.DataFrame", value_col: str, metric: str, exps: str) -> tuple["pd.DataFrame", dict[str, int]]:
    """FINISHED runs that logged the metric, one per fingerprint; the rest counted by reason."""
    excluded: dict[str, int] = {}
    if frame.empty:
        raise ConfigError(f"experiment {exps} has no task runs (runs with a {T.TASK} tag) to analyse")
    withdrawn = tagged(frame, T.WITHDRAWN)
    if withdrawn.any():  # a sweep worker's claim that lost to another's: never a result
        excluded["withdrawn duplicate claims"] = int(withdrawn.sum())
        frame = frame[~withdrawn]
    diverged = diverged_mask(frame)
    if diverged.any():
        excluded["diverged runs (non-finite training loss; per group in the warnings)"] = int(diverged.sum())
        frame = frame[~diverged]
    for status, count in frame.loc[frame["status"] != "FINISHED", "status"].value_counts().items():
        excluded[f"{str(status).lower()} run{'s' if count != 1 else ''}"] = int(count)
    done = frame[frame["status"] == "FINISHED"]
    if done.empty:
        what = ", ".join(f"{n} {k}" for k, n in excluded.items())
        raise ConfigError(f"experiment {exps} has no FINISHED runs to analyse ({what})")
    if T.STATUS in done.columns:
        marked = done[T.STATUS] == "failed"
        if marked.any():
            excluded[f"runs marked {T.STATUS}=failed"] = int(marked.sum())
            done = done[~marked]
    if value_col not in done.columns or done[value_col].notna().sum() == 0:
        import difflib

        logged = sorted(c[len("final."):] for c in frame.columns if c.startswith("final."))
        close = difflib.get_close_matches(metric, logged, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"logged metrics: {', '.join(logged[:12]) or 'none'}"
        raise ConfigError(f"metric {metric!r} was not logged by any finished run of {exps}; {hint}")
    missing = done[value_col].isna()
    if missing.any():
        excluded[f"finished runs without {metric}"] = int(missing.sum())
        done = done[~missing]
    if T.FINGERPRINT in done.columns:
        dup = done.duplicated(T.FINGERPRINT, keep="last") & done[T.FINGERPRINT].notna()
        if dup.any():  # frames are sorted by start time: the newest repeat of identical work wins
            excluded[f"older repeats of identical runs (same {T.FINGERPRINT})"] = int(dup.sum())
            done = done[~dup]
    return done.reset_index(drop=True), excluded


def tagged(frame: "pd.DataFrame", tag: str) -> "pd.Series":
    import pandas as pd

    if tag not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[tag].notna() & (frame[tag].astype(str) != "")


def diverged_mask(frame: "pd.DataFrame") -> "pd.Series":
    """Runs whose watched training loss became non-finite: FAILED with ``NonFinite: ...``
    (``divergence.on_nonfinite=fail``) or FINISHED with ``labrun.diverged`` (``record``)."""
    mask = tagged(frame, T.DIVERGED)
    if T.FAILURE in frame.columns:
        mask = mask | frame[T.FAILURE].astype(str).str.startswith("NonFinite:")
    return mask


def diverged_line(frame: "pd.DataFrame", keys: list[str], default: bool) -> str | None:
    """Divergence is a result too: how often each group diverged, to print beside its statistics."""
    frame = frame[~tagged(frame, T.WITHDRAWN)]
    gone = frame[diverged_mask(frame)]
    if gone.empty or any(k not in gone.columns for k in keys):
        return None
    counts = labels(gone, keys, default).value_counts()
    total = labels(frame, keys, default).value_counts()
    parts = [f"{g}: {n} of {int(total.get(g, n))}" for g, n in counts.items()]
    return "diverged runs, left out of the statistics (group: diverged of all its runs): " + "; ".join(parts)


def labels(frame: "pd.DataFrame", keys: list[str], default: bool) -> "pd.Series":
    """A readable name per group: method (/condition) for labrun.group, else key=value."""
    import pandas as pd

    def show(col: str, v: Any) -> str:
        text = tables.num(v) if isinstance(v, float) else str(v)
        return f"{col[len('params.'):]}={text}" if col.startswith("params.") else text

    if not default:
        return frame[keys].apply(lambda r: "/".join(show(k, r[k]) for k in keys), axis=1).astype(object)
    parts = [T.METHOD] if T.METHOD in frame.columns else []
    if T.CONDITION in frame.columns and frame[T.CONDITION].nunique() > 1:
        parts.append(T.CONDITION)
    key = keys[0]
    base = (frame[parts].astype(str).agg("/".join, axis=1) if parts
            else frame[key].astype(str).str[:8]).astype(object)
    out = pd.Series(base, index=frame.index, dtype=object)
    per_group = pd.DataFrame({"label": base, "key": frame[key]}).drop_duplicates("key")
    params = [c for c in frame.columns if c.startswith("params.") and c != "params.seed"]
    firsts = frame.groupby(key, sort=False)[params].first() if params else None
    rename: dict[Any, str] = {}
    for label, clash in per_group.groupby("label"):
        if len(clash) < 2:
            continue
        rows = firsts.loc[list(clash["key"])] if firsts is not None else None
        varying = [c for c in params if rows[c].astype(str).nunique() > 1] if rows is not None else []
        for g in clash["key"]:
            extra = ", ".join(show(c, rows.at[g, c]) for c in varying[:3]) if varying else str(g)[:8]
            rename[g] = f"{label} ({extra})"
    if rename:
        out = frame[key].map(rename).astype(object).where(frame[key].isin(list(rename)), out)
    return out
