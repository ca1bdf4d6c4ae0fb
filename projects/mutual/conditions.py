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
                                ``pde.resolution`` (Burgers 256 -> 1024, Darcy 43 -> 85)
``viscosity_shift``             Burgers: test viscosity ``pde.burgers.test_viscosity`` (0.05)
``coefficient_shift``           Darcy: test coefficients ``pde.darcy.test_high/test_low``
==============================  ===========================================================

Not every atom fits every problem (:data:`ATOM_FITS`): label noise and corruptions are
classification's, the shifts operator learning's (viscosity Burgers', coefficients Darcy's);
``clean`` and ``weak_peer`` fit all. :func:`check_fits` gives the one-line error.

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
BASE_KNOBS = ("label_noise", "weak_peer", "corruption", "severity")
"""The knobs every perturbation section reports (those the first problem needed); the
shift knobs are reported when on (:meth:`Condition.named_knobs`)."""

ATOM_FITS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "noise": ("classification", None),
    "corrupt": ("classification", None),
    "resolution_shift": ("operator", None),
    "viscosity_shift": ("operator", ("burgers",)),
    "coefficient_shift": ("operator", ("darcy",)),
}
"""atom kind -> (the problem it fits, the datasets it fits or None for all of that problem's)."""

_NOISE = re.compile(r"^noise(\d{1,2})$")
_CORRUPT = re.compile(r"^corrupt_(" + "|".join(CORRUPTIONS) + r")_(\d+)$")

GRAMMAR = (f"{CLEAN}, noise<NN> (NN = % of training labels flipped, 1-99: noise20, noise40), "
           f"{WEAK_PEER}, corrupt_<{'|'.join(CORRUPTIONS)}>_<1-5> (e.g. corrupt_gaussian_noise_3), "
           f"{', '.join(SHIFTS)} (operator), several joined with '+' (e.g. noise20+weak_peer)")


@dataclass(frozen=True)
class Condition:
    """The knobs of a condition (the ``perturbation`` config section's values)."""

    label_noise: float = 0.0
    weak_peer: bool = False
    corruption: str = "none"
    severity: int = 0
    resolution_shift: bool = False
    viscosity_shift: bool = False
    coefficient_shift: bool = False

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
        return out + [s for s in SHIFTS if getattr(self, s)]

    @property
    def name(self) -> str:
        return condition_name(**self.knobs())


def condition_name(label_noise: float = 0.0, weak_peer: bool = False, corruption: str = "none",
                   severity: int = 0, resolution_shift: bool = False, viscosity_shift: bool = False,
                   coefficient_shift: bool = False) -> str:
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
    return "+".join(atoms) or CLEAN


def parse_condition(name: str) -> Condition:
    """``"noise20+weak_peer"`` -> ``Condition(label_noise=0.2, weak_peer=True)``.

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
        else:
            what = f"condition atom {atom!r} in {name!r}" if len(atoms) > 1 else f"condition {name!r}"
            raise UnknownNameError(f"unknown {what}; valid: {GRAMMAR}")
    return Condition(**knobs)


def check_fits(condition: Condition, problem: str, dataset: str) -> None:
    """Raise a one-line :class:`ValueError` when an atom of ``condition`` does not fit the
    problem or dataset (e.g. label noise on an operator, a viscosity shift on Darcy)."""
    for kind in condition.atoms():
        if kind not in ATOM_FITS:
            continue
        want, datasets = ATOM_FITS[kind]
        if problem != want or (datasets is not None and dataset not in datasets):
            fits = [k for k, (p, ds) in ATOM_FITS.items() if p == problem and (ds is None or dataset in ds)]
            names = {"noise": "noise<NN>", "corrupt": "corrupt_<kind>_<1-5>"}
            valid = ", ".join([CLEAN, WEAK_PEER] + [names.get(k, k) for k in fits])
            where = f"problem={want}" + (f" with data.dataset={'/'.join(datasets)}" if datasets else "")
            raise ValueError(f"condition={condition.name} does not fit problem={problem}, "
                             f"data.dataset={dataset}: {names.get(kind, kind)} needs {where}; "
                             f"valid here: {valid}")


def common_conditions() -> list[str]:
    """The names of the study's conditions (each has ``configs/conditions/<name>.yaml``)."""
    names = [CLEAN, "noise20", "noise40", WEAK_PEER]
    names += [f"corrupt_{kind}_{s}" for kind in CORRUPTIONS for s in SEVERITIES]
    return names
