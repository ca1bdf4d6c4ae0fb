"""Entry point of the ``dynamics`` task: train a small GPT and watch its dynamics.

``python -m projects.dynamics.train --config spiky --set train.stabiliser=zclip`` (or
``labrun run dynamics ...``, or ``mlflow run . -e dynamics -P config=spiky``).

Every step logs the training loss, the monitor's signals and index (``dynamics.*``), the
trigger and the event flags; every ``train.eval_every`` steps the validation perplexity.
At the end: the cost report (events per 100k steps, time to recover, wasted-FLOPs share),
trigger precision/recall against events (index vs loss-only), and the timeline figure.
With ``branch.enabled`` a :class:`~projects.dynamics.branch.orchestrator.Brancher` rides
along: each trigger becomes a branch episode (a nested run ``branch.<t>``), the steps it
replaces are logged again with the chosen future's values, and the costs count its compute.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

from tracking import load_config, start_run

from projects.dynamics.components import COMPONENTS
from projects.dynamics.config import Config  # noqa: F401  (the schema is the contract)


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(Config, argv)
    with start_run(cfg) as run:
        _train(cfg, run)


def _train(cfg: Config, run) -> None:
    from projects.dynamics.trainer import Trainer

    brancher = _brancher(cfg, run) if cfg.branch.enabled else None
    t = Trainer(cfg, run.device, run)
    run.track_state(**t.objects(), **({"branch": brancher} if brancher is not None else {}))
    run.log.info("dynamics: stabiliser=%s params=%d vocab=%d corpus=%d tokens", cfg.train.stabiliser,
                 t.model.n_params(), t.corpus.vocab.size, len(t.corpus.train))
    loop = run.steps(cfg.train.steps, desc=f"dynamics/{cfg.train.stabiliser}")
    for step in loop:
        metrics = t.step()
        if brancher is not None:
            metrics = _branch_step(brancher, t, run, step, metrics)
        if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
            metrics.update(t.evaluate())
            run.epoch_line(step, cfg.train.steps, metrics, loop.elapsed_s,
                           keys=["loss.train", "loss.val", "metric.perplexity.val", "dynamics.index"])
        run.log_metrics(metrics, step=step)
        if cfg.train.sleep_s:
            time.sleep(cfg.train.sleep_s)
    _finish(t, run, last=max(loop.last, loop.start - 1), brancher=brancher)


def _brancher(cfg: Config, run):
    """The episode runner, its proxy pre-trained on ``branch.pretrain`` (see proxy/collect.py)."""
    from projects.dynamics.proxy.collect import pretrain_rows
    from projects.dynamics.proxy.features import feature_names
    from projects.dynamics.branch.orchestrator import Brancher
    from projects.dynamics.proxy.model import Proxy
    from projects.dynamics.branch.record import MlflowEpisodes

    b = cfg.branch
    rows, source = pretrain_rows(cfg, run.log) if b.mode != "rules" else ([], {"source": "none (rules)"})
    proxy = None
    if b.mode != "rules":
        proxy = Proxy(len(feature_names(cfg.model.layers)), b.horizon, b.hidden, b.epochs, cfg.seed,
                      b.confidence, b.risk_level)
        if rows:
            proxy.fit(rows)
    run.results["branch_pretrain"] = {**source, "rows": len(rows), **(proxy.report if proxy else {})}
    run.log.info("branch: mode=%s signal=%s, proxy pre-trained on %d rows (%s)", b.mode, b.signal, len(rows),
                 source["source"])
    return Brancher(cfg, proxy=proxy, log_rows=rows, sink=MlflowEpisodes(run.client, run.run_id, run.experiment_id),
                    checkpoint_dir=run.local_dir / "checkpoints")


def _branch_step(brancher, t, run, step: int, metrics: dict) -> dict:
    """An episode replaces the steps since its branch point: log them again (MLflow keeps both
    values at those steps; the later one is the run's trajectory) and return step t's."""
    redo = brancher.after_step(t, metrics)
    for s, m in redo:
        if s < step:
            run.log_metrics(m, step=s)
        else:
            metrics = m
    if redo or (brancher.episodes and brancher.episodes[-1]["trigger"] == step):
        metrics["dynamics.branch.episode"] = 1.0
    return metrics


def _finish(t, run, last: int, brancher=None) -> None:
    report = t.costs()
    run.log_metrics(report.metrics(), step=last)
    if brancher is not None:
        _branch_costs(t, run, last, brancher, report)
    run.results.update({"events": report.events, "events_per_100k": report.per_100k,
                        "unrecovered": report.unrecovered, "time_to_recover": report.time_to_recover,
                        "wasted_flops_share": report.wasted_share, "total_flops": report.total_flops,
                        "event_steps": [e.start for e in t.events.events],
                        "final_val_perplexity": _final_ppl(t)})
    run.report_components(COMPONENTS, SimpleNamespace(run=run, t=t, cfg=t.cfg))


def _branch_costs(t, run, last: int, brancher, report) -> None:
    """The branch simulation's own compute counts as waste: wasted share over all FLOPs spent."""
    from projects.dynamics.proxy import logdb
    from projects.dynamics.proxy.features import feature_names

    s = brancher.summary(len(t.state.losses), t.flops_per_step)
    total = report.total_flops + s["branch_flops"]
    share = (report.wasted_flops + s["branch_flops"]) / max(total, 1.0)
    run.log_metrics({"dynamics.events.wasted_share": share, "dynamics.events.wasted_share_training": report.wasted_share,
                     "dynamics.branch.episodes": s["episodes"], "dynamics.branch.rate": s["rate_per_1k"],
                     "dynamics.branch.flops_share": s["branch_flops"] / max(total, 1.0),
                     "perf.branch.proxy_ms": s["proxy_ms"], "perf.branch.verify_s": s["verify_s"],
                     **({"dynamics.branch.coverage.interval": s["coverage_interval"],
                         "dynamics.branch.coverage.quantile": s["coverage_quantile"]} if s["coverage_n"] else {})},
                    step=last)
    run.results["branch"] = {**s, "wasted_share_training": report.wasted_share, "episodes_detail": brancher.episodes}
    report.wasted_share = share  # the summary's wasted_flops_share counts the branch compute too
    path = logdb.write(brancher.log_rows, feature_names(t.cfg.model.layers), run.local_dir / "log_db.parquet")
    run.log_artifact(path)


def _final_ppl(t) -> float:
    import math

    return math.exp(min(t.state.val[-1][1], 50.0)) if t.state.val else t.evaluate()["metric.perplexity.val"]


if __name__ == "__main__":
    main()
