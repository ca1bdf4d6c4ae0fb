"""``summary.json`` and ``REPORT.md``: what a run did, readable without the UI.

Written at the end of every run, also a failed or killed one, so the reason a metric or a
component is missing is always next to the numbers.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

_ICON = {"success": "✅ success", "disabled": "⏸ disabled", "failed": "❌ failed"}


def _num(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.6g}"
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:  # numpy / torch scalars
        return _json_safe(value.item())
    except Exception:
        return str(value)


def summary_json(summary: Mapping[str, Any]) -> str:
    return json.dumps(_json_safe(summary), indent=2, sort_keys=False)


def _outcome_lines(s: dict) -> list[str]:
    """How the run ended, when that is more than FINISHED: the failure, or a recorded divergence."""
    lines: list[str] = []
    if s.get("failure"):
        lines += ["## Failure", "", f"`{s['failure']}`", "",
                  "The traceback is in `traceback.txt`, the log in `logs/train.log`.", ""]
        if str(s["failure"]).startswith("NonFinite:"):
            lines += ["Training diverged: the run ends at that step, and the newest checkpoint is the "
                      "last good one (before the non-finite value).", ""]
    if s["tags"].get("labrun.diverged"):
        lines += ["## Diverged", "", f"A watched training metric became non-finite at step "
                  f"{s['tags']['labrun.diverged']}; training stopped there and the run was recorded as "
                  f"finished (`divergence.on_nonfinite=record`). `labrun analyze` counts such runs "
                  f"apart from the statistics.", ""]
    return lines


def report_markdown(summary: Mapping[str, Any]) -> str:
    s = summary
    lines = [f"# {s.get('name') or s['run_id']}", ""]
    if s.get("description"):
        lines += [s["description"], ""]
    lines += [
        "| | |", "|---|---|",
        f"| run | `{s['run_id']}` |",
        f"| outcome | **{s['outcome']}** |",
        f"| research status | {s['tags'].get('labrun.status', '')} |",
        f"| task / method / condition / seed | {s['task']} / {s['tags'].get('labrun.method')} / "
        f"{s['tags'].get('labrun.condition')} / {s['tags'].get('labrun.seed')} |",
        f"| git | `{s['git']['commit']}` on {s['git']['branch']}, dirty: {s['git']['dirty']} |",
        f"| base config | {s.get('base_config') or '(schema defaults)'} |",
        f"| overrides | {' '.join(f'`{o}`' for o in s.get('cli_overrides') or []) or '(none)'} |",
        f"| fingerprint / group | `{s['tags'].get('labrun.fingerprint')}` / `{s['tags'].get('labrun.group')}` |",
        f"| duration | {s.get('duration_s', 0):.1f} s |",
    ]
    if s.get("resumed_from"):
        lines.append(f"| resumed from | `{s['resumed_from']}` at step {s.get('resumed_step')} |")
    lines.append("")
    lines += _outcome_lines(s)
    lines += ["## Training", ""]
    training = s.get("training") or {}
    if training:
        lines += ["| metric | final | at step | best | at step | direction |",
                  "|---|---:|---:|---:|---:|:---:|"]
        for name, st in training.items():
            lines.append(f"| `{name}` | {_num(st['final'])} | {st['final_step']} | "
                         f"{_num(st['best'])} | {st['best_step']} | {st['direction']} |")
    else:
        lines.append("No metric was logged.")
    lines.append("")

    components = s.get("components") or {}
    lines += ["## Components", ""]
    if not components:
        lines += ["This task reported no optional components.", ""]
    else:
        lines += ["| component | status | reason / how to enable |", "|---|---|---|"]
        for name, c in components.items():
            why = c["reason"] or ""
            if c["status"] == "disabled" and c.get("enable"):
                why += f" — enable with `{c['enable']}`"
            lines.append(f"| `{name}` | {_ICON.get(c['status'], c['status'])} | {why} |")
        lines.append("")
        for name, c in components.items():
            lines += [f"### {name} — {c['status']}", ""]
            if c["reason"]:
                lines += [f"Reason: {c['reason']}", ""]
            if c["status"] == "disabled" and c.get("enable"):
                lines += [f"To enable: `{c['enable']}`", ""]
            if c.get("metrics"):
                lines += ["| metric | value |", "|---|---:|"]
                lines += [f"| `{k}` | {_num(v)} |" for k, v in c["metrics"].items()]
                lines.append("")
            data = {k: v for k, v in (c.get("data") or {}).items() if k != "traceback"}
            if data:
                lines += ["| result | value |", "|---|---|"]
                for k, v in data.items():
                    text = _num(v) if not isinstance(v, (list, dict)) else json.dumps(_json_safe(v))[:200]
                    lines.append(f"| {k} | {text} |")
                lines.append("")
            for fig in c.get("figures") or []:
                lines += [f"![{name}]({fig})", ""]
    lines += _models(s.get("models") or {})
    lines += _datasets(s.get("datasets") or [])
    figures = [f for f in s.get("figures") or []
               if not any(f in (c.get("figures") or []) for c in components.values())]
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})\n" for f in figures]
    lines += ["## Files", "",
              "`config.yaml` (header + resolved config), `summary.json`, `logs/train.log`"
              + (", `git.diff`" if s["git"]["dirty"] == "true" else "")
              + (", `checkpoints/`" if s.get("checkpoints") else "")
              + (", `traceback.txt`" if s.get("failure") else ""), ""]
    return "\n".join(lines)


def _models(models: Mapping[str, Any]) -> list[str]:
    if not models:
        return []
    lines = ["## Models", "", "| model | status | MLflow model / reason |", "|---|---|---|"]
    for name, m in models.items():
        data = m.get("data") or {}
        if m["status"] == "success":
            what = f"`{data.get('model_uri')}`" + (f", registered as `{data['registered_as']}`"
                                                   if data.get("registered_as") else "")
        else:
            what = (m.get("reason") or "") + (f" — enable with `{m['enable']}`" if m.get("enable") else "")
        lines.append(f"| `{name}` | {_ICON.get(m['status'], m['status'])} | {what} |")
    return lines + [""]


def _datasets(datasets: list) -> list[str]:
    if not datasets:
        return []
    lines = ["## Datasets", "", "Logged with `mlflow.log_input` (the run page's Datasets panel); the "
             "digest is MLflow's hash of the data itself.", "",
             "| dataset | split | rows | digest |", "|---|---|---:|---|"]
    lines += [f"| {d['name']} | {d['split']} | {d.get('rows', '')} | `{d['digest']}` |" for d in datasets]
    return lines + [""]


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#1f2328}}
table{{border-collapse:collapse;margin:1em 0;max-width:100%;table-layout:auto}}
td,th{{border:1px solid #d0d7de;padding:.3em .6em;overflow-wrap:break-word;vertical-align:top}}
td code{{overflow-wrap:anywhere}}
pre{{white-space:pre-wrap;overflow-wrap:anywhere}}
th{{background:#f6f8fa}}code{{background:#f6f8fa;padding:.1em .3em;border-radius:4px}}
img{{max-width:100%;border:1px solid #d0d7de}}</style></head><body>
{body}</body></html>
"""


def report_html(markdown_text: str, root: Any) -> str:
    """``REPORT.html``: REPORT.md with its figures embedded, so they show in the MLflow
    artifact viewer (which does not resolve a Markdown file's relative image links).

    Descriptions, tags, names and failure messages in the Markdown come from users (on a
    shared server, from other users), so raw HTML in it is shown as text, never passed
    through: MLflow's viewer runs an HTML artifact's scripts, and a report opened from disk
    runs them unsandboxed. Only PNGs inside the run's own folder are embedded."""
    import base64
    import html
    import re
    from pathlib import Path

    base = Path(root).resolve()

    def embed(match: "re.Match[str]") -> str:
        alt, rel = match.group(1), match.group(2)
        path = (base / rel).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f"![{alt}](data:image/png;base64,{data})"

    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", embed, markdown_text)
    try:
        from markdown_it import MarkdownIt

        body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    except ImportError:  # still readable, figures included
        body = f"<pre>{html.escape(text)}</pre>"
    title = html.escape(markdown_text.splitlines()[0].lstrip("# ") if markdown_text else "report")
    return _HTML.format(title=title, body=body)
