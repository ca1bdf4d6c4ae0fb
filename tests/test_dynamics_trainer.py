"""The trainer as an object: every stabiliser resumes bit-identically from a snapshot or a
checkpoint file, the data sources, the model's internal readings, Adam-HD, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from projects.dynamics.config import STABILISERS, Config
from tracking.config import resolve_config

TINY = ["data.context=16", "data.max_chars=40000", "model.layers=1", "model.d_model=16", "model.heads=2",
        "train.batch_size=4", "train.steps=40", "train.eval_batches=1", "train.activations_every=5",
        "monitor.window=10", "monitor.warmup=4", "monitor.history=4", "monitor.horizon=2",
        "events.warmup=5", "events.window=10", "instability.lr_spikes=[12]", "instability.noisy_steps=[15]",
        "instability.noise_prob=0.1", "train.zclip_warmup=3", "train.spam_reset_gap=7"]


def tiny(*extra: str) -> Config:
    return resolve_config(Config, None, TINY + list(extra))


def _run(t, n):
    return [{k: v for k, v in t.step().items() if not k.startswith("perf.")} for _ in range(n)]


def _future(t, n):
    """The metrics of the next n steps and the state they leave that metrics may not show."""
    rows = _run(t, n)
    return rows, t.events.state_dict(), repr(t.clipper.state_dict()), t.state.losses[:]


@pytest.mark.parametrize("stabiliser", STABILISERS)
def test_every_stabiliser_continues_bit_identically_from_a_snapshot_and_a_file(stabiliser, tmp_path):
    from tracking import checkpoint
    from projects.dynamics.trainer import Trainer

    torch.set_num_threads(1)
    cfg = tiny(f"train.stabiliser={stabiliser}")
    t = Trainer(cfg)
    _run(t, 10)
    snap = t.snapshot()
    path = checkpoint.save(snap, tmp_path / "cp_10.ptz")
    want = _future(t, 10)               # crosses the LR spike, the noisy batch, SPAM's reset
    t.restore(snap)
    assert _future(t, 10) == want
    other = Trainer.from_checkpoint(cfg, str(path))
    assert other.state.step == 10 and _future(other, 10) == want
    assert math.isfinite(want[0][-1]["loss.train"])


def test_model_init_does_not_depend_on_the_callers_rng():
    from projects.dynamics.trainer import Trainer

    torch.manual_seed(123)
    a = Trainer(tiny()).model.state_dict()
    torch.manual_seed(456)
    b = Trainer(tiny()).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_step_metrics_are_valid_names_and_layer_summaries_appear_on_schedule():
    from tracking.metrics import validate_name
    from projects.dynamics.trainer import Trainer

    t = Trainer(tiny())
    rows = [t.step() for _ in range(5)]
    for row in rows:
        for name in row:
            validate_name(name)
    assert "diag.act.layer0.entropy" in rows[4] and "diag.act.layer0.entropy" not in rows[3]
    ev = t.evaluate()
    assert ev["metric.perplexity.val"] == pytest.approx(math.exp(ev["loss.val"]))
    assert ev["metric.perplexity.val"] < t.corpus.vocab.size * 1.5   # near uniform at worst


def test_feature_entropy_is_log_width_when_uniform_and_zero_when_one_channel():
    from projects.dynamics.model import feature_entropy

    assert float(feature_entropy(torch.ones(3, 8))) == pytest.approx(math.log(8))
    one = torch.zeros(3, 8)
    one[:, 2] = 5.0
    assert float(feature_entropy(one)) == pytest.approx(0.0, abs=1e-6)


def test_attention_entropy_is_measured_per_forward():
    from projects.dynamics.model import GPT

    m = GPT(vocab=10, context=8, layers=2, d_model=8, heads=2)
    for b in m.blocks:   # zero queries and keys: uniform causal attention
        torch.nn.init.zeros_(b.qkv.weight)
        torch.nn.init.zeros_(b.qkv.bias)
    m(torch.zeros(1, 8, dtype=torch.long))
    want = sum(math.log(i) for i in range(1, 9)) / 8
    assert m.attention_entropy() == pytest.approx(want, rel=1e-5)


def test_pydoc_corpus_and_token_kinds():
    from projects.dynamics.data import Corpus

    c = Corpus("pydoc", "char", 32, 0.1)
    assert 90 <= c.vocab.size <= 120       # 103 distinct characters in CPython 3.11's copy
    assert 300_000 < len(c.train) + len(c.val) < 700_000
    b = Corpus("pydoc", "byte", 32, 0.1, max_chars=5000)
    assert b.vocab.size == 256 and int(b.train.max()) < 256


def test_a_text_file_and_a_wikitext_folder(tmp_path):
    from projects.dynamics.data import Corpus

    text = tmp_path / "book.txt"
    text.write_text("héllo wörld, " * 500, encoding="utf-8")
    c = Corpus(str(text), "char", 16, 0.2)
    assert c.vocab.size == len(set("héllo wörld, ")) and len(c.val) == pytest.approx(0.2 * 6500, abs=2)
    wiki = tmp_path / "wikitext-2"
    wiki.mkdir()
    (wiki / "wiki.train.tokens").write_text(" = Title = \n the cat sat . " * 200, encoding="utf-8")
    (wiki / "wiki.valid.tokens").write_text(" the dog ran . " * 100, encoding="utf-8")
    w = Corpus(str(wiki), "byte", 16, 0.1)
    assert len(w.val) == len(" the dog ran . ") * 100


def test_noisy_batches_are_noise(tmp_path):
    from projects.dynamics.data import Corpus

    c = Corpus("pydoc", "char", 64, 0.1, max_chars=50_000)
    g = torch.Generator().manual_seed(0)
    x, y = c.batch(8, g)
    xs, ys = c.batch(8, torch.Generator().manual_seed(0), noise="shuffle")
    full, shuffled = torch.cat([x, y[:, -1:]], 1), torch.cat([xs, ys[:, -1:]], 1)
    assert torch.equal(full.sort(1).values, shuffled.sort(1).values)   # same tokens ...
    assert not torch.equal(full, shuffled)                              # ... in another order
    xr, _ = c.batch(8, g, noise="random")
    assert len(set(xr.flatten().tolist())) > 0.6 * c.vocab.size   # uniform over the vocabulary


def test_adam_hd_is_adam_without_hypergradient_and_adapts_with_it():
    from projects.dynamics.baselines import AdamHD

    torch.manual_seed(0)
    w0 = torch.randn(5, 3)
    target = torch.randn(5, 3)

    def fit(opt_cls, **kw):
        w = torch.nn.Parameter(w0.clone())
        opt = opt_cls([w], lr=0.05, **kw)
        for _ in range(30):
            opt.zero_grad()
            ((w - target) ** 2).sum().backward()
            opt.step()
        return w.detach(), opt

    plain, _ = fit(torch.optim.Adam, betas=(0.9, 0.99))
    hd0, _ = fit(AdamHD, betas=(0.9, 0.99), hypergrad_lr=0.0)
    assert torch.allclose(plain, hd0, atol=1e-6)
    _, opt = fit(AdamHD, betas=(0.9, 0.99), hypergrad_lr=0.01)
    assert opt.param_groups[0]["hd_alpha"] != 1.0


def test_spam_and_zclip_are_the_packages_classes():
    from pytorch_optimizer import SPAM
    from zclip import ZClip
    from projects.dynamics.trainer import Trainer

    assert isinstance(Trainer(tiny("train.stabiliser=spam")).optimizer, SPAM)
    assert isinstance(Trainer(tiny("train.stabiliser=zclip")).clipper.z, ZClip)


@pytest.mark.parametrize("override, fragment", [
    ("data.source=/no/such/corpus.txt", "no such file or folder"),
    ("train.stabiliser=adamw", "train.stabiliser"),
    ("model.heads=3", "divisible"),
    ("monitor.taus=2", "did you mean"),
])
def test_bad_config_is_one_line_and_exit_2(override, fragment, capsys):
    from tracking import load_config

    with pytest.raises(SystemExit) as exc:
        load_config(Config, ["--set", override], prog="dynamics")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
