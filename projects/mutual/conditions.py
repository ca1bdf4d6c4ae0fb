"""The condition vocabulary: a run's named experimental condition and what it changes.

A condition name is one or more atoms joined by ``+`` (in this order when combined):

==============================  ===========================================================
``clean``                       nothing changes (alone only)
``noise<NN>``                   symmetric label noise on NN % of the *training* labels
                                (``noise20``, ``noise40``; 1-99). Val and test stay clean.
``weak_peer``                   model B is handicapped as ``train.weak_peer_*`` say
                                (trained for a fraction of the epochs and/or narrower)
``corrupt_<kind>_<severity>``   test-time input corruption, CIFAR-C style, severity 1-5;
                                kinds: ``gaussian_noise``, ``gaussian_blur``, ``contrast``
``resolution_shift``            operator: train at ``pde.shift_resolution``, test at
                                ``pde.resolution`` (Burgers 256 -> 1024, Darcy 43 -> 85,
                                Navier-Stokes 32 -> 64);
                                segmentation: test at ``seg.shift_image_size`` (64 -> 96)
``viscosity_shift``             Burgers, Navier-Stokes: test viscosity ``pde.<dataset>.test_viscosity``
                                (Burgers 0.05, Navier-Stokes 1e-4)
``coefficient_shift``           Darcy: test coefficients ``pde.darcy.test_high/test_low``
``temporal_shift``              timeseries: test on the series' far end, after a gap
``horizon_shift``               timeseries: test at ``series.test_horizon`` (recursive rollout)
``domain_shift``                segmentation (shapes): test scenes with unseen background
                                textures and/or shape palette (``seg.domain_shift``)
``missing_<random|block><NN>``  timeseries: NN % of the test inputs dropped (single values /
                                blocks of steps) and imputed (last observation carried forward)
==============================  ===========================================================

Not every atom fits every problem (:data:`ATOM_FITS`; an atom may fit several): label noise is
classification's, corruptions classification's and segmentation's, the resolution shift operator
learning's and segmentation's, the other shifts one problem's (viscosity Burgers' and Navier-Stokes', coefficients
Darcy's, domain_shift the generated shapes'); ``clean`` and ``weak_peer`` fit all. :func:`check_fits` gives the one-line error.

e.g. ``noise40+weak_peer``, ``noise20+corrupt_contrast_5``. The name is the run's
``condition`` key (tag ``labrun.condition``); the knobs it stands for are the
``perturbation.*`` keys, so analysis can also group by ``perturbation.label_noise``. Either
side may be given: ``--set condition=noise20`` fills ``perturbation.label_noise=0.2``, and
``--set perturbation.label_noise=0.2`` alone names the run ``noise20``; giving both in a way
that disagrees is a one-line error. ``configs/conditions/<name>.yaml`` holds common ones.

Torch-free: the config schema uses this while a config is resolved.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from projects.mutual.registry import UnknownNameError

CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast")
SEVERITIES = (1, 2, 3, 4, 5)
CLEAN = "clean"
WEAK_PEER = "weak_peer"
SHIFTS = ("resolution_shift", "viscosity_shift", "coefficient_shift")
"""Operator-learning shift atoms; each is a boolean knob of the same name."""
SERIES_SHIFTS = ("temporal_shift", "horizon_shift")
"""Time-series shift atoms; boolean knobs of the same name."""
MISSING = ("random", "block")
SEG_SHIFTS = ("domain_shift",)
"""Segmentation shift atoms (``resolution_shift`` is shared with operator learning, in SHIFTS)."""
"""``missing_<kind><NN>``: knob ``missing_<kind>`` = NN / 100 (share of the inputs dropped)."""
BASE_KNOBS = ("label_noise", "weak_peer", "corruption", "severity")
"""The knobs every perturbation section reports (those the first problem needed); the
shift knobs are reported when on (:meth:`Perturbation.named_knobs`)."""

ATOM_FITS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "noise": {"classification": None},
    "corrupt": {"classification": None, "segmentation": None},
    "resolution_shift": {"operator": None, "segmentation": None},
    "viscosity_shift": {"operator": ("burgers", "navier_stokes")},
    "coefficient_shift": {"operator": ("darcy",)},
    "temporal_shift": {"timeseries": None},
    "horizon_shift": {"timeseries": None},
    "missing": {"timeseries": None},
    "domain_shift": {"segmentation": ("shapes",)},
}
"""atom kind -> {each problem it fits: the datasets it fits there, or None for all of that
problem's}. (A ``(problem, datasets)`` pair is read as a one-problem mapping.)"""

_NOISE = re.compile(r"^noise(\d{1,2})$")
_MISSING = re.compile(r"^missing_(" + "|".join(MISSING) + r")(\d{1,2})$")
_CORRUPT = re.compile(r"^corrupt_(" + "|".join(CORRUPTIONS) + r")_(\d+)$")

GRAMMAR = (f"{CLEAN}, noise<NN> (NN = % of training labels flipped, 1-99: noise20, noise40), "
           f"{WEAK_PEER}, corrupt_<{'|'.join(CORRUPTIONS)}>_<1-5> (e.g. corrupt_gaussian_noise_3), "
           f"{', '.join(SHIFTS)} (operator), {', '.join(SERIES_SHIFTS)}, missing_<random|block><NN> "
           f"(timeseries), {', '.join(SEG_SHIFTS)} (segmentation), several joined with '+' (e.g. noise20+weak_peer)")


@dataclass(frozen=True)
class Perturbation:
    """What a named condition perturbs: the knobs of the ``perturbation`` section. (A "condition"
    is the run's name for its cell, the ``labrun.condition`` tag; this is what mutual parses it to.)"""

    label_noise: float = 0.0
    weak_peer: bool = False
    corruption: str = "none"
    severity: int = 0
    resolution_shift: bool = False
    viscosity_shift: bool = False
    coefficient_shift: bool = False
    temporal_shift: bool = False
    horizon_shift: bool = False
    missing_random: float = 0.0
    missing_block: float = 0.0
    domain_shift: bool = False

    def knobs(self) -> dict:
        return asdict(self)

    def named_knobs(self) -> dict:
        """:data:`BASE_KNOBS` always, the shift knobs when on: what a config reports."""
        return {k: v for k, v in asdict(self).items() if k in BASE_KNOBS or v}

    def atoms(self) -> list[str]:
        """Atom kinds that are on (keys of :data:`ATOM_FITS`, plus ``weak_peer``)."""
        out = ["noise"] if self.label_noise else []
        out += [WEAK_PEER] if self.weak_peer else []
        out += ["corrupt"] if self.corruption != "none" else []
        out += [s for s in SHIFTS if getattr(self, s)]
        out += [s for s in SERIES_SHIFTS if getattr(self, s)]
        out += [s for s in SEG_SHIFTS if getattr(self, s)]
        return out + (["missing"] if self.missing_random or self.missing_block else [])

    @property
    def name(self) -> str:
        return condition_name(**self.knobs())


def condition_name(label_noise: float = 0.0, weak_peer: bool = False, corruption: str = "none",
                   severity: int = 0, resolution_shift: bool = False, viscosity_shift: bool = False,
                   coefficient_shift: bool = False, temporal_shift: bool = False, horizon_shift: bool = False,
                   missing_random: float = 0.0, missing_block: float = 0.0, domain_shift: bool = False) -> str:
    """Knobs -> the canonical name (``clean`` when nothing is changed)."""
    atoms = []
    pct = round(float(label_noise) * 100)
    if abs(pct - float(label_noise) * 100) > 1e-6 or not 0 <= pct < 100:
        raise ValueError(f"label noise {label_noise} cannot be named: use a whole percent "
                         f"in [0, 0.99] (0.2, 0.25, 0.4)")
    if pct:
        atoms.append(f"noise{pct}")
    if weak_peer:
        atoms.append(WEAK_PEER)
    if corruption != "none":
        if corruption not in CORRUPTIONS or int(severity) not in SEVERITIES:
            raise ValueError(f"corruption {corruption!r} at severity {severity} cannot be named: "
                             f"kinds {', '.join(CORRUPTIONS)}, severities 1-5")
        atoms.append(f"corrupt_{corruption}_{int(severity)}")
    on = {"resolution_shift": resolution_shift, "viscosity_shift": viscosity_shift,
          "coefficient_shift": coefficient_shift}
    atoms += [s for s in SHIFTS if on[s]]
    atoms += [s for s, v in zip(SERIES_SHIFTS, (temporal_shift, horizon_shift)) if v]
    for kind, rate in zip(MISSING, (missing_random, missing_block)):
        pct = round(float(rate) * 100)
        if abs(pct - float(rate) * 100) > 1e-6 or not 0 <= pct < 100:
            raise ValueError(f"missing_{kind} {rate} cannot be named: use a whole percent in [0, 0.99] (0.1, 0.3)")
        atoms += [f"missing_{kind}{pct}"] if pct else []
    atoms += ["domain_shift"] if domain_shift else []
    return "+".join(atoms) or CLEAN


def parse_condition(name: str) -> Perturbation:
    """``"noise20+weak_peer"`` -> ``Perturbation(label_noise=0.2, weak_peer=True)``.

    Raises :class:`UnknownNameError` (one line, with the grammar) for anything else.
    """
    if not isinstance(name, str) or not name:
        raise UnknownNameError(f"unknown condition {name!r}; valid: {GRAMMAR}")
    atoms = name.split("+")
    knobs: dict = {}
    for atom in atoms:
        if atom == CLEAN and len(atoms) == 1:
            continue
        if (m := _NOISE.match(atom)) and 0 < int(m.group(1)) < 100 and "label_noise" not in knobs:
            knobs["label_noise"] = int(m.group(1)) / 100
        elif atom == WEAK_PEER and "weak_peer" not in knobs:
            knobs["weak_peer"] = True
        elif ((m := _CORRUPT.match(atom)) and int(m.group(2)) in SEVERITIES
              and "corruption" not in knobs):
            knobs["corruption"], knobs["severity"] = m.group(1), int(m.group(2))
        elif atom in SHIFTS and atom not in knobs:
            knobs[atom] = True
        elif atom in SERIES_SHIFTS and atom not in knobs:
            knobs[atom] = True
        elif atom in SEG_SHIFTS and atom not in knobs:
            knobs[atom] = True
        elif ((m := _MISSING.match(atom)) and 0 < int(m.group(2)) < 100
              and f"missing_{m.group(1)}" not in knobs):
            knobs[f"missing_{m.group(1)}"] = int(m.group(2)) / 100
        else:
            what = f"condition atom {atom!r} in {name!r}" if len(atoms) > 1 else f"condition {name!r}"
            raise UnknownNameError(f"unknown {what}; valid: {GRAMMAR}")
    return Perturbation(**knobs)


def check_fits(perturbation: Perturbation, problem: str, dataset: str) -> None:
    """Raise a one-line :class:`ValueError` when an atom of ``perturbation`` does not fit the
    problem or dataset (e.g. label noise on an operator, a viscosity shift on Darcy)."""
    for kind in perturbation.atoms():
        if kind not in ATOM_FITS:
            continue
        if not _fits(kind, problem, dataset):
            fits = [k for k in ATOM_FITS if _fits(k, problem, dataset)]
            names = {"noise": "noise<NN>", "corrupt": "corrupt_<kind>_<1-5>",
                     "missing": "missing_<random|block><NN>"}
            valid = ", ".join([CLEAN, WEAK_PEER] + [names.get(k, k) for k in fits])
            where = " or ".join(f"problem={p}" + (f" with data.dataset={'/'.join(ds)}" if ds else "")
                                for p, ds in _problems(kind).items())
            raise ValueError(f"condition={perturbation.name} does not fit problem={problem}, "
                             f"data.dataset={dataset}: {names.get(kind, kind)} needs {where}; "
                             f"valid here: {valid}")


def _problems(kind: str) -> dict[str, tuple[str, ...] | None]:
    fits = ATOM_FITS[kind]
    return fits if isinstance(fits, dict) else {fits[0]: fits[1]}


def _fits(kind: str, problem: str, dataset: str) -> bool:
    problems = _problems(kind)
    return problem in problems and (problems[problem] is None or dataset in problems[problem])


def common_conditions() -> list[str]:
    """The names of the study's conditions (each has ``configs/conditions/<name>.yaml``)."""
    names = [CLEAN, "noise20", "noise40", WEAK_PEER]
    names += [f"corrupt_{kind}_{s}" for kind in CORRUPTIONS for s in SEVERITIES]
    return names
