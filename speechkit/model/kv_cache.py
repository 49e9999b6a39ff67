"""Static, preallocated key/value cache for the decoder (gpt-fast style).

Buffers are allocated once per generation by :meth:`KVCache.allocate` (or
``Decoder.allocate_cache``) and written in place at the slots each forward call names, so the
tensor shapes never change between decoding steps and ``torch.compile`` sees one graph.
All rows of a batch share slot indices: batched prompts are left-padded to a common length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from speechkit.errors import ConfigError


@dataclass
class KVCache:
    """Per-layer key and value buffers, each (B, kv_heads, max_len, head_dim).

    Slots that were never written hold zeros; the decoder's attention mask hides them.
    """

    keys: list[Tensor]
    values: list[Tensor]

    @classmethod
    def allocate(
        cls,
        num_layers: int,
        batch: int,
        kv_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """Zero-filled buffers for ``batch`` sequences of at most ``max_len`` tokens (prompt + generated)."""
        if batch < 1 or max_len < 1:
            raise ConfigError(f"KV cache needs batch >= 1 and max_len >= 1, got {batch=}, {max_len=}")
        shape = (batch, kv_heads, max_len, head_dim)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)],
        )

    @property
    def max_len(self) -> int:
        """Number of slots (tokens) per sequence."""
        return self.keys[0].shape[2]

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    def layer(self, index: int) -> tuple[Tensor, Tensor]:
        """Layer ``index``'s (key, value) buffers, what its attention writes into (:func:`write_slots`)."""
        return self.keys[index], self.values[index]


def write_slots(
    buffers: tuple[Tensor, Tensor], cache_position: Tensor, key: Tensor, value: Tensor
) -> tuple[Tensor, Tensor]:
    """Store ``key``/``value`` (B, kv_heads, L, head_dim) at slots ``cache_position`` (L,) of one layer's
    ``buffers`` (from :meth:`KVCache.layer`). The cache dtype must be the compute dtype (no silent conversion).

    Returns the buffers (B, kv_heads, max_len, head_dim), written slots included. A function of the buffers,
    not of a layer index, so compiled code for one decoder layer serves them all.
    """
    k_buf, v_buf = buffers
    k_buf.index_copy_(2, cache_position, key)
    v_buf.index_copy_(2, cache_position, value)
    return k_buf, v_buf
