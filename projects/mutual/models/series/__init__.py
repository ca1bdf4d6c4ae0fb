"""Forecasters for ``problem=timeseries``: ``(N, lookback, C_in) -> (N, horizon, C_out)``.

Each is built as ``factory(lookback, horizon, channels, outputs, **sizes)``; ``outputs`` are
the indices of the forecast channels among the inputs (all of them for ``series.features=M``).
DLinear and PatchTST are channel-independent (one set of weights shared by every channel, so
they read only the forecast channels); the LSTM reads every input channel.
"""
