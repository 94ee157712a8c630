"""Causal 3D convolution with an explicit cache for processing a clip in temporal chunks.

Causal in time: output frame ``t`` sees input frames ``<= t`` only. The past is padded by
replicating the first frame ``kernel_t - 1`` times, so frame 0 is encoded from itself alone (an
image is a 1-frame video). Space is zero-padded symmetrically ("same" for odd kernels).

Chunked processing: pass the same :class:`CausalCache` to every call. Each layer stores the input
frames its next windows still need (the last ``kernel_t - 1`` frames for stride 1; for a temporal
stride ``s`` the frames after the last window start, ``kernel_t - s`` when chunks are multiples of
``s``). Feeding a clip chunk by chunk then gives exactly the frames of one pass, and the cache
holds a fixed number of frames per layer however long the clip grows.
"""

from __future__ import annotations

import torch
from torch import nn


class CausalCache:
    """The frames each causal layer carries from one temporal chunk to the next.

    Create one per clip and pass it to every chunk's forward call, in order. A layer not yet in
    the cache is seeing the clip's first chunk. Holds tensors only; never reuse it across clips.
    """

    def __init__(self) -> None:
        self._frames: dict[nn.Module, torch.Tensor] = {}
        self._seen: set[nn.Module] = set()

    def __contains__(self, layer: nn.Module) -> bool:
        return layer in self._frames

    def get(self, layer: nn.Module) -> torch.Tensor | None:
        return self._frames.get(layer)

    def put(self, layer: nn.Module, frames: torch.Tensor) -> None:
        self._frames[layer] = frames

    def first_call(self, layer: nn.Module) -> bool:
        """True the first time ``layer`` asks, i.e. on the clip's first chunk; records the call."""
        first = layer not in self._seen
        self._seen.add(layer)
        return first

    def copy(self) -> CausalCache:
        """A cache that continues from this one's state, leaving this one as it is (the frames are shared:
        layers replace them, never write into them)."""
        out = CausalCache()
        out._frames, out._seen = dict(self._frames), set(self._seen)
        return out

    def nbytes(self) -> int:
        """Memory held by the cache, in bytes (flat in the clip length)."""
        return sum(f.numel() * f.element_size() for f in self._frames.values())


def _triple(v: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


class CausalConv3d(nn.Module):
    """A Conv3d that is causal in time and zero-pads space to keep ``ceil(H / stride_h)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: ``k`` or ``(k_t, k_h, k_w)``; spatial kernels must be odd.
        stride: ``s`` or ``(s_t, s_h, s_w)``; ``s_t <= k_t``.
        bias: add a learned bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        stride: int | tuple[int, int, int] = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        st, sh, sw = _triple(stride)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"CausalConv3d: spatial kernel sizes must be odd, got kernel_size={kernel_size}")
        if st > kt:
            raise ValueError(f"CausalConv3d: temporal stride {st} > temporal kernel {kt} would skip frames")
        self.kernel_t, self.stride_t = kt, st
        self.conv = nn.Conv3d(
            in_channels, out_channels, (kt, kh, kw), stride=(st, sh, sw), padding=(0, kh // 2, kw // 2), bias=bias
        )

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        # x: (B, C, T, H, W) -> (B, C_out, T', H', W')
        past = cache.get(self) if cache is not None else None
        if past is None:  # the clip's first chunk: replicate frame 0 into the past
            past = x[:, :, :1].expand(-1, -1, self.kernel_t - 1, -1, -1)
        x = torch.cat([past, x], dim=2)  # (B, C, k_t - 1 + T, H, W) on the first chunk
        if x.shape[2] < self.kernel_t:
            raise ValueError(
                f"CausalConv3d: a chunk gave {x.shape[2]} frames with its cache, fewer than the temporal "
                f"kernel {self.kernel_t}: make temporal chunks a multiple of the temporal compression"
            )
        if cache is not None:
            n_out = (x.shape[2] - self.kernel_t) // self.stride_t + 1
            cache.put(self, x[:, :, n_out * self.stride_t :].clone())  # frames the next window starts at
        return self.conv(x)
