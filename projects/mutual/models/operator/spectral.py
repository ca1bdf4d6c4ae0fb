"""neuralop 2.0.0's ``SpectralConv`` with its inverse shift corrected, so that odd grids work.

The library centres the spectrum with ``fftshift`` before keeping the low modes (the zero
frequency lands at index ``n // 2``) and undoes it with ``fftshift`` again. For an even ``n``
the two shifts cancel; for an odd ``n`` they move every mode by one place: the output's
frequency ``k`` carries what the weights computed for ``k + 1`` along every axis but the last
(the ``rfft`` axis, which is not shifted). A weight of ones, which should pass every kept mode
unchanged, then returns a wrong field on a 43 x 43 grid and the right one on 44 x 44. A model
trained on one parity is therefore evaluated as a different operator on the other: an FNO
trained on Darcy at 22 x 22 and tested at 43 x 43 scored 63 % relative L2. Upstream fixed it
after 2.0.0 (neuraloperator PR #688, "switching fftshift to ifftshift"); this class is the
library's forward for real fields at full precision with ``ifftshift`` as the inverse, and is
passed to ``neuralop.models.FNO`` as its ``conv_module`` (weights, initialisation and
factorisations stay the library's).
"""
from __future__ import annotations

import torch
from neuralop.layers.spectral_convolution import SpectralConv


def _shift(spec: torch.Tensor, dims: list[int], how) -> torch.Tensor:
    """``how`` (fftshift / ifftshift) along the complex axes; none in 1-D (only the rfft axis)."""
    return how(spec, dim=dims) if dims else spec


class CentredSpectralConv(SpectralConv):
    def forward(self, x: torch.Tensor, output_shape=None) -> torch.Tensor:
        if self.complex_data or self.fno_block_precision != "full":
            raise ValueError("CentredSpectralConv covers real fields at full precision only")
        sizes = list(x.shape[2:])
        dims = list(range(-self.order, 0))
        spec = _shift(torch.fft.rfftn(x, norm=self.fft_norm, dim=dims), dims[:-1], torch.fft.fftshift)
        weight = self.weight[self._weight_slices(spec.shape[2:])]
        kept = self._kept_modes(spec.shape[2:], weight.shape[-self.order:])
        out = torch.zeros((x.shape[0], self.out_channels, *spec.shape[2:]), dtype=spec.dtype, device=x.device)
        out[kept] = self._contract(spec[kept], weight, separable=self.separable)
        out = _shift(out, dims[:-1], torch.fft.ifftshift)  # the library's fftshift here is the bug
        shape = output_shape or self._scaled(sizes)
        x = torch.fft.irfftn(out, s=shape, dim=dims, norm=self.fft_norm)
        return x + self.bias if self.bias is not None else x

    def _weight_slices(self, fft_size) -> tuple:
        """The library's: fewer modes than the weight holds (a coarse grid) keep its centre."""
        starts = [m - min(s, n) for s, n, m in zip(fft_size, self.n_modes, self.max_n_modes)]
        lead = [slice(None)] if self.separable else [slice(None), slice(None)]
        centred = [slice(st // 2, -st // 2) if st else slice(None) for st in starts[:-1]]
        return tuple(lead + centred + [slice(None, -starts[-1]) if starts[-1] else slice(None)])

    @staticmethod
    def _kept_modes(fft_size, kept) -> tuple:
        """The low modes around the centred zero frequency (index n // 2); the rfft axis from 0."""
        out = [slice(None), slice(None)]
        for size, k in zip(fft_size[:-1], kept[:-1]):
            out.append(slice(size // 2 - k // 2, size // 2 + k // 2 + k % 2))
        out.append(slice(None, min(kept[-1], fft_size[-1])))
        return tuple(out)

    def _scaled(self, sizes):
        if self.resolution_scaling_factor is None:
            return sizes
        return [round(s * r) for s, r in zip(sizes, self.resolution_scaling_factor)]
