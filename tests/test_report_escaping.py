"""What users typed is shown, never executed: REPORT.html escapes run text, exports defuse formulas.

A real toy run in a temp store carries a hostile description and tag; its REPORT.html is
parsed (not grepped) for script elements and event-handler attributes. The export of that
run neutralises a description that a spreadsheet would evaluate and leaves numbers alone.
"""
from __future__ import annotations

import csv
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from tests.helpers import all_runs

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
TAG = "<b>x</b>"
FORMULA = '=HYPERLINK("http://example.invalid","click")'


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the document's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _toy(store, *extra: str) -> str:
    from projects.toy.train import main as toy_main

    toy_main(["--config", "quick", "--set", "train.steps=4", "--set", "train.eval_every=2",
              "--experiment", "esc", *extra])
    (run,) = [r for r in all_runs(store, ["esc"]) if r.data.tags.get("mlflow.note.content") == extra[1]]
    return run.info.run_id


def test_report_html_shows_user_text_and_runs_none_of_it(store, tmp_path):
    run_id = _toy(store, "--description", HOSTILE, "--tag", f"note={TAG}")
    path = Path(store.download_artifacts(run_id, "REPORT.html", str(tmp_path)))
    page = _Elements()
    page.feed(path.read_text())
    names = [t for t, _ in page.tags]
    assert "script" not in names
    assert not [(t, a) for t, a in page.tags for k in a if k.lower().startswith("on")]
    assert not [a for t, a in page.tags if t == "img" and a.get("src") == "x"]
    text = "".join(page.text)
    assert HOSTILE in text  # shown to the reader as typed
    assert "b" not in names  # the tag's markup is text too, if the report shows tags at all


def test_report_html_embeds_only_the_runs_own_figures(tmp_path):
    from tracking.report import report_html

    (tmp_path / "run" / "figures").mkdir(parents=True)
    (tmp_path / "run" / "figures" / "f.png").write_bytes(b"\x89PNG own")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG secret")
    page = report_html("# r\n\n![f](figures/f.png)\n\n![x](../outside.png)\n", tmp_path / "run")
    assert "data:image/png;base64," in page
    import base64

    assert base64.b64encode(b"\x89PNG secret").decode() not in page


def test_export_neutralises_formulas_and_keeps_numbers(store, tmp_path):
    from analysis.export import export

    run_id = _toy(store, "--description", FORMULA, "--set", "train.lr=0.05")
    (path,) = export(["esc"], tmp_path)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    (row,) = [r for r in rows if r["run_id"] == run_id]
    cells = [v for v in row.values() if "HYPERLINK" in v]
    assert cells and all(v.startswith("'=") for v in cells)
    frame = pd.read_csv(path)
    numeric = [c for c in frame.columns if c.startswith(("final.", "best.", "step."))]
    assert numeric and all(pd.api.types.is_numeric_dtype(frame[c]) for c in numeric)
    from analysis import query

    direct = query.runs_frame(["esc"]).set_index("run_id")
    for col in numeric:
        assert frame.set_index("run_id").loc[run_id, col] == direct.loc[run_id, col]
    assert str(frame.set_index("run_id").loc[run_id, "params.train.lr"]) == "0.05"


def test_export_writes_non_finite_values_drops_empty_columns_and_refuses_an_unwritable_folder(store, tmp_path):
    import math

    from analysis.export import export
    from tracking.config import ConfigError

    run_id = _toy(store, "--description", "plain")
    store.log_metric(run_id, "metric.blowup", math.inf, step=0)
    store.log_metric(run_id, "metric.lost", math.nan, step=0)
    store.set_tag(run_id, "only.empty", "")  # a tag whose value is empty in every row
    (path,) = export(["esc"], tmp_path / "out")
    with path.open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["final.metric.blowup"] == "inf" and row["final.metric.lost"] == "nan"
    frame = pd.read_csv(path, keep_default_na=False)
    assert not [c for c in frame.columns if (frame[c] == "").all()]
    (kept,) = export(["esc"], tmp_path / "all", keep_empty=True)
    assert len(pd.read_csv(kept).columns) >= len(frame.columns)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    import pytest

    with pytest.raises(ConfigError, match="cannot write the export to .*choose a writable folder"):
        export(["esc"], blocker / "sub")
