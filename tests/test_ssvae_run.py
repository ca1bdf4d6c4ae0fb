"""SSVAE runs into a real SQLite tracking store: component statuses, loss terms that sum
to loss.total, figures, resume, and bad input that leaves nothing behind."""
from __future__ import annotations

import json

import pytest

from tests.helpers import all_runs

TINY = ["--set", "model.hidden=16", "--set", "model.latent_dim=3", "--set", "train.epochs=3",
        "--set", "train.eval_every=1", "--set", "data.max_train=300", "--set", "diagnostics.reconstructions=4",
        "--set", "diagnostics.samples_per_component=2", "--set", "checkpoint.every=2"]
LOSSES = ["loss.recon", "loss.kl.z", "loss.kl.c", "loss.classifier", "loss.diversity", "loss.dirichlet"]
METRICS = ["loss.total", *LOSSES, "metric.accuracy.train", "metric.accuracy.val", "metric.k_eff",
           "metric.responsibility.confidence"]


def _only_run(store):
    runs = all_runs(store)
    assert len(runs) == 1
    return runs[0]


def _artifact(store, run_id, path):
    return open(store.download_artifacts(run_id, path, str(store.root / f"dl-{run_id}")), encoding="utf-8").read()


def _assert_terms_sum(store, run, terms):
    history = {k: {m.step: m.value for m in store.get_metric_history(run.info.run_id, k)}
               for k in ["loss.total", *terms]}
    steps = sorted(history["loss.total"])
    assert steps == [1, 2, 3]
    for step in steps:
        parts = sum(history[k][step] for k in terms)
        assert parts == pytest.approx(history["loss.total"][step], rel=1e-5, abs=1e-4), step


def test_every_component_on_succeeds_and_loss_terms_sum_to_total(store):
    from projects.ssvae import train

    train.main(["--config", "quick", *TINY, "--set", "diversity.weight=1.0"])
    run = _only_run(store)
    assert run.info.status == "FINISHED"
    assert set(METRICS) <= set(run.data.metrics)
    _assert_terms_sum(store, run, LOSSES)
    summary = json.loads(_artifact(store, run.info.run_id, "summary.json"))
    statuses = {k: v["status"] for k, v in summary["components"].items()}
    assert statuses == dict.fromkeys(
        ["tau_classifier", "classifier", "mixture_prior", "heteroscedastic_decoder", "diversity", "dirichlet",
         "figures.latent_space", "figures.reconstructions", "figures.component_samples"], "success"), statuses
    mix = summary["components"]["mixture_prior"]["data"]
    assert 1.0 <= mix["k_eff"] <= 10.0 and len(mix["pi"]) == 10
    assert summary["components"]["heteroscedastic_decoder"]["data"]["sigma_mean"] >= 0.05
    files = {f.path for f in store.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/latent_space.png", "figures/reconstructions.png", "figures/mixture_weights.png",
            "figures/component_samples.png"} <= files
    log = _artifact(store, run.info.run_id, "logs/train.log")
    line = next(li for li in log.splitlines() if "Epoch 3/3" in li)
    for name in ["loss.total", *LOSSES]:  # every active loss term is on the progress line
        assert f"{name}:" in line
    assert run.data.tags["labrun.method"] == "mixture"


def test_switched_off_parts_are_disabled_with_reasons_and_a_broken_figure_fails(store):
    """Fewer components than classes, normal prior, Bernoulli decoder, no diversity, a Dirichlet
    weight without learnable pi, and a 1-D latent whose 2-D picture cannot be drawn."""
    from labrun.cli import main as labrun

    code = labrun(["run", "ssvae", "--config", "quick", *TINY, "--set", "model.num_components=5",
                   "--set", "model.prior=normal", "--set", "model.decoder=bernoulli",
                   "--set", "model.learn_pi=false", "--set", "model.latent_dim=1",
                   "--set", "dirichlet.weight=1.0", "--set", "diversity.weight=0"])
    assert code == 0
    run = _only_run(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["labrun.method"] == "normal"
    logged = set(run.data.metrics)
    assert not {"metric.accuracy.train", "metric.accuracy.val", "loss.classifier", "loss.dirichlet",
                "loss.diversity"} & logged
    _assert_terms_sum(store, run, ["loss.recon", "loss.kl.z", "loss.kl.c"])
    c = json.loads(_artifact(store, run.info.run_id, "summary.json"))["components"]
    assert c["tau_classifier"]["status"] == "disabled"
    assert "num_components=5 < 10 classes" in c["tau_classifier"]["reason"]
    assert c["tau_classifier"]["enable"].startswith("--set model.num_components=10")
    assert c["classifier"]["status"] == "disabled" and "num_components=5" in c["classifier"]["reason"]
    assert c["mixture_prior"] == {**c["mixture_prior"], "status": "disabled", "enable": "--set model.prior=mixture"}
    assert c["heteroscedastic_decoder"]["enable"] == "--set model.decoder=gaussian"
    assert c["diversity"]["status"] == "disabled" and c["dirichlet"]["status"] == "disabled"
    assert "learn_pi is false" in c["dirichlet"]["reason"]
    assert c["figures.latent_space"]["status"] == "failed"
    assert "latent_dim >= 2" in c["figures.latent_space"]["reason"]
    assert c["figures.reconstructions"]["status"] == "success"
    assert c["figures.component_samples"]["status"] == "success"
    report = _artifact(store, run.info.run_id, "REPORT.md")
    for name, comp in c.items():  # the report explains every component, with how to enable it
        assert f"### {name} — {comp['status']}" in report
        if comp["status"] == "disabled":
            assert f"To enable: `{comp['enable']}`" in report
    assert "ValueError: the latent-space figure" in report


def test_resume_after_a_crash_continues_bit_identically(store):
    from projects.ssvae import train

    args = ["--config", "quick", *TINY, "--set", "train.epochs=4"]
    with pytest.raises(RuntimeError, match="injected failure at epoch 3"):
        train.main([*args, "--set", "train.fail_at_epoch=3"])
    crashed = _only_run(store)
    assert crashed.info.status == "FAILED"
    train.main(["--resume", crashed.info.run_id, "--set", "train.fail_at_epoch=null"])
    train.main(args)
    runs = {r.info.run_id: r for r in all_runs(store)}
    resumed = next(r for r in runs.values() if r.data.tags.get("labrun.resumed_from") == crashed.info.run_id)
    straight = next(r for r in runs.values() if r.info.run_id not in (crashed.info.run_id, resumed.info.run_id))
    assert resumed.info.status == straight.info.status == "FINISHED"
    assert resumed.data.tags["labrun.resumed_step"] == "2"
    for key in ["loss.total", "loss.recon", "metric.accuracy.val", "metric.k_eff"]:
        a = [(m.step, m.value) for m in store.get_metric_history(resumed.info.run_id, key)]
        b = [(m.step, m.value) for m in store.get_metric_history(straight.info.run_id, key)]
        assert sorted(a) == sorted(b) and len(a) == 4, key


@pytest.mark.parametrize("override, message", [
    ("data.dataset=mnist", "needs data.root"),
    ("model.sigma_max=0.01", "model.sigma_max"),
    ("model.encoder=cnn", "model.encoder expects one of 'mlp' | 'conv'"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_no_run(store, capsys, override, message):
    from projects.ssvae import train

    with pytest.raises(SystemExit) as exc:
        train.main(["--config", "quick", "--set", override])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert all_runs(store) == []
