"""Operator models: ``neuralop``'s FNO / TFNO (wrapped to take and return bare fields) and a
DeepONet written here (neuraloperator 2.x has none). Built by
:func:`projects.mutual.models.build_operator`; every model maps (N, s) or (N, s, s) inputs to
outputs on the same grid, at any resolution."""
