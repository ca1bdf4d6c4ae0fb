"""Selective mutual learning (SSMO): two heterogeneous models train side by side on the same
batches, and each may imitate the other; does imitating the peer only where the peer is
better avoid negative transfer?

Modules: ``methods`` (independent, naive = DML, ssmo-hard, ssmo-soft behind one ABC),
``tasks`` (the problem interface; ``classification`` now), ``models`` (mlp, cnn,
resnet18 by name), ``data`` (offline datasets, label noise, CIFAR-C-style corruptions),
``dynamics`` (gradient conflict on a probe batch), ``joint`` (one joint step, evaluation),
``losses`` (divergences tasks hand to methods), ``conditions`` (the condition vocabulary),
``config`` (the typed schema), ``registry`` (torch-free name lookups).
"""
