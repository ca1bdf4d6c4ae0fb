"""analysis: tracking store -> tidy DataFrame -> statistics, rank consistency, tables, figures.

Modules: ``query`` (runs_frame, curves_frame), ``stats`` (mean ± std, CIs, paired tests),
``ranking`` (per-seed ranks, Kendall's W), ``curves`` (mean ± std bands), ``tables``
(Markdown, LaTeX, terminal), ``report`` (the ``labrun analyze`` pipeline and its analysis
run), ``export`` (summary.csv / parquet, curves), ``cli`` (the ``analyze`` and ``export``
subcommands). Nothing heavy is imported here: ``labrun --help`` must stay instant.
"""
