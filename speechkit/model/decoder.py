"""Phi-4-mini decoder with the speech LoRA (reference sections D and E).

Parameter names follow the official checkpoint with the PEFT wrapper removed
(``layers.{i}.self_attn.qkv_proj.weight`` for ``...qkv_proj.base_layer.weight``), so the
converter's key map is literal. Built for speed: static KV cache allocated by a separate call,
meta-device construction, norms in fp32, no dtype or device chosen inside ``forward``.

Typical use::

    with torch.device("meta"):
        decoder = Decoder(cfg, lora_cfg)
    decoder.load_state_dict(weights, assign=True)
    cache = decoder.allocate_cache(batch=1, max_len=prompt_len + max_new_tokens)
    hidden = decoder(embeds, position_ids, cache=cache, cache_position=torch.arange(prompt_len))
    next_logits = decoder.logits(hidden[:, -1:])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechkit.errors import ConfigError
from speechkit.model import decode_gemv
from speechkit.model.attention import Attention, build_attention_mask, make_linear
from speechkit.model.config import DecoderConfig, LoraConfig
from speechkit.model.kv_cache import KVCache
from speechkit.model.lora import LoRALinear
from speechkit.model.rope import LongRope, Regime, RopeTables

LoraState = Literal["none", "unmerged", "merged"]


def position_ids_from_mask(padding_mask: Tensor) -> Tensor:
    """Position ids (B, L) for a left-padded batch, from its mask (B, L) with 1 = real token.

    Real tokens count 0, 1, ... from their first real token (cumulative sum - 1); padding gets 1,
    as in the transformers generation utilities (the value is irrelevant: padding is masked).
    """
    positions = padding_mask.long().cumsum(-1) - 1
    return positions.masked_fill(padding_mask == 0, 1)


class RMSNorm(nn.Module):
    """x / rms(x) computed in fp32, cast back to the input dtype, then times ``weight`` (dim,)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # F.rms_norm without the weight: one fused kernel on CUDA instead of five, and bitwise equal to
        # x * rsqrt(mean(x^2) + eps) in fp32 on CPU (checked at the decoder's shapes). It computes in fp32
        # whatever the input dtype and rounds once on output, so a bf16 input gives exactly the official
        # float() -> normalise -> to(bf16) (checked on an H200 and on CPU) without the two cast kernels.
        # The rounding comes before the weight product, as in the official code: bf16 differs by 1 ulp
        # otherwise, so the weight is not passed to F.rms_norm.
        return self.weight * F.rms_norm(x, (x.shape[-1],), eps=self.eps)


class MLP(nn.Module):
    """down(up * SiLU(gate)); ``gate_up_proj`` rows are gate first, then up."""

    def __init__(self, config: DecoderConfig, lora: LoraConfig | None) -> None:
        super().__init__()
        inter = config.intermediate_size
        self.gate_up_proj = make_linear(config.hidden_size, 2 * inter, lora, "gate_up_proj")
        self.down_proj = make_linear(inter, config.hidden_size, lora, "down_proj")

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # (B, L, inter) each
        return self.down_proj(up * F.silu(gate))


# Batch-1 decode steps (``group_queries``) on CUDA with Triton run each layer as four fused matrix-vector kernels
# (:mod:`speechkit.model.decode_gemv`) when its products are by dense weights (LoRA merged or off), and the final norm
# and LM head as a fifth (:meth:`Decoder.step_logits`).
STEP_GEMV = True


def gemv_step(x: Tensor) -> bool:
    """Whether a decode step of ``x`` (B, ..., hidden) runs the :mod:`speechkit.model.decode_gemv` kernels: one
    sequence (B = 1), :data:`STEP_GEMV` set, CUDA with Triton on a GPU of compute capability 8 or more."""
    return (STEP_GEMV and x.shape[0] == 1 and x.is_cuda and decode_gemv.available()
            and torch.cuda.get_device_properties(x.device).major >= 8)  # fmt: skip


class DecoderLayer(nn.Module):
    """Pre-norm block: h = x + attn(norm(x)); out = h + mlp(norm(h))."""

    def __init__(self, config: DecoderConfig, lora: LoraConfig | None) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, lora)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config, lora)

    def forward(
        self,
        x: Tensor,
        rope: RopeTables,
        mask: Tensor | None,
        cache: tuple[Tensor, Tensor] | None,
        cache_position: Tensor | None,
        kv_len: int | None = None,
        group_queries: bool = False,
    ) -> Tensor:
        if group_queries and (weights := self._gemv_weights(x)) is not None:
            return self._gemv_step(x, weights, rope, mask, cache, cache_position, kv_len)
        h = x + self.self_attn(self.input_layernorm(x), rope, mask, cache, cache_position, kv_len, group_queries)
        return h + self.mlp(self.post_attention_layernorm(h))

    def _gemv_weights(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """The qkv, o, gate_up and down weights when a decode step of ``x`` (B, 1, hidden) runs its products as
        :mod:`speechkit.model.decode_gemv` kernels (see :data:`STEP_GEMV`), else None. Constant under
        ``torch.compile``."""
        if not gemv_step(x):
            return None
        linears = (self.self_attn.qkv_proj, self.self_attn.o_proj, self.mlp.gate_up_proj, self.mlp.down_proj)
        weights = tuple(m.weight if isinstance(m, nn.Linear) else m.dense_weight() for m in linears)
        return None if any(w is None for w in weights) else weights

    def _gemv_step(
        self,
        x: Tensor,
        weights: tuple[Tensor, Tensor, Tensor, Tensor],
        rope: RopeTables,
        mask: Tensor,
        cache: tuple[Tensor, Tensor],
        cache_position: Tensor,
        kv_len: int | None,
    ) -> Tensor:
        """:meth:`forward` of one token in four fused matrix-vector kernels: both norms go into the products they
        feed, the SiLU gate into gate_up's, both residual adds into o's and down's, and (with the Triton attention
        kernel) the merge of the attention's cache chunks into o's."""
        qkv_weight, o_weight, gate_up_weight, down_weight = weights
        linear = torch.ops.speechkit.decode_linear
        first, second = self.input_layernorm, self.post_attention_layernorm
        qkv = linear(x, qkv_weight, first.weight, first.eps, None, False)
        attention = self.self_attn
        if attention.step_kernel(qkv, cache, kv_len):  # the attention's merge inside o_proj's kernel
            args = attention.step_kernel_args(qkv, rope, mask, cache, cache_position)
            h = torch.ops.speechkit.decode_attention_o(*args, o_weight, x)
        else:
            h = linear(attention.attend(qkv, rope, mask, cache, cache_position, kv_len, True), o_weight, None, 0.0, x,
                       False)  # fmt: skip
        act = linear(h, gate_up_weight, second.weight, second.eps, None, True)
        return linear(act, down_weight, None, 0.0, h, False)


class Decoder(nn.Module):
    """Phi-4-mini: token embedding, ``num_layers`` decoder layers, final norm, (tied) LM head.

    With a ``LoraConfig``, its target linears are :class:`LoRALinear` (adapter on by default);
    without one they are plain ``nn.Linear`` and the decoder is the bare base model.
    """

    def __init__(self, config: DecoderConfig, lora: LoraConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, lora) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rope = LongRope(config.rope)

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token ids (B, L) -> embeddings (B, L, hidden)."""
        return self.embed_tokens(input_ids)

    def logits(self, hidden: Tensor) -> Tensor:
        """Final hidden states (B, L, hidden) -> logits (B, L, vocab) in the hidden dtype."""
        return F.linear(hidden, self._head_weight())

    def step_logits(self, hidden: Tensor) -> Tensor:
        """A decode step's last hidden states before the final norm, (B, hidden) -> fp32 logits (B, vocab): the norm
        and :meth:`logits` (rounded to the hidden dtype, then fp32), at batch 1 where :func:`gemv_step` in one fused
        matrix-vector kernel (whose normalised input stays fp32: see :mod:`speechkit.model.decode_gemv`)."""
        if gemv_step(hidden):
            weight, norm = self._head_weight(), self.norm
            return torch.ops.speechkit.decode_linear(hidden, weight, norm.weight, norm.eps, None, False, True)
        return self.logits(self.norm(hidden)).float()

    def _head_weight(self) -> Tensor:
        return self.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def allocate_cache(
        self,
        batch: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """A zeroed static cache for ``batch`` sequences of up to ``max_len`` tokens.

        ``device``/``dtype`` default to the embedding weight's (the compute dtype must match).
        """
        weight = self.embed_tokens.weight
        cfg = self.config
        return KVCache.allocate(
            cfg.num_layers, batch, cfg.num_kv_heads, max_len, cfg.head_dim,
            device=device or weight.device, dtype=dtype or weight.dtype,
        )

    def regime_for(self, total_len: int) -> Regime:
        """RoPE regime for a forward pass over ``total_len`` KV slots (cached + new, padding included).

        A generator compares this for the next step with the regime its cache was filled under;
        on a change (short -> long at ``original_max_position_embeddings``) it must recompute the
        whole prefix with the new regime, as the official implementation does.
        """
        return self.rope.regime_for(total_len)

    def forward(
        self,
        inputs_embeds: Tensor,
        position_ids: Tensor,
        cache: KVCache | None = None,
        cache_position: Tensor | None = None,
        attention_mask: Tensor | None = None,
        regime: Regime | None = None,
        prefill: bool = False,
        group_queries: bool = False,
        layer_forward: Callable[..., Tensor] | None = None,
        attention_bias: Tensor | None = None,
        final_norm: bool = True,
    ) -> Tensor:
        """Embeddings (B, L, hidden) -> final-normed hidden states (B, L, hidden) (without ``final_norm``: the last
        layer's output, for :meth:`step_logits`).

        Args:
            inputs_embeds: token (and audio) embeddings, in the compute dtype.
            position_ids: (B, L) rotary positions; left-padded batches use
                :func:`position_ids_from_mask`.
            cache: static cache from :meth:`allocate_cache`; without it, attention runs over the
                L tokens of this call only.
            cache_position: (L,) cache slots of these tokens, shared by all rows; defaults to
                0..L-1 (a prefill). Only with ``cache``.
            attention_mask: (B, L_total), 1 = real token, 0 = padding, covering slots 0..L_total-1
                (L_total <= cache.max_len; = L without cache). None means no padding. Slots past
                L_total count as real (causality hides them), so a compiled loop can pass one
                full-width (B, cache.max_len) mask every step and keep shapes static.
            regime: RoPE regime; default ``regime_for(KV length)`` where the KV length is L without a
                cache and ``cache_position[-1] + 1`` with one (a host sync: pass it explicitly in a
                compiled decoding loop, where the generator knows the length).
            prefill: with ``cache``, these L tokens fill slots 0..L-1: attention runs over those slots
                only (plain causal, the fastest kernel, when there is no padding), not the whole buffer.
            group_queries: single-token steps over a cache only (the CUDA-graph decode step): attention by
                :func:`speechkit.model.attention.grouped_step_attention` (each KV head's query heads as one
                query group, the cache read once; written out or SDPA by batch size) under an additive mask,
                made once per step instead of once per layer. Same math, another summation order: the plain
                path keeps SDPA's grouped-query call.
            layer_forward: called as ``layer_forward(layer, h, ...)`` (``DecoderLayer.forward``'s arguments) in
                place of each layer's own call: the decode step passes one compiled function for every layer.
            attention_bias: single-token steps over a cache only: (B, 1, 1, cache.max_len) additive bias (0 or
                -inf per slot) used as the whole mask, with no causal term, in place of ``attention_mask``: the
                continuous-batching step keeps each row's tokens in a ring of slots, where a later slot can hold
                an earlier token.
        """
        length = inputs_embeds.shape[1]
        attend = None  # cache slots attention runs over; None = the whole buffer
        if cache is None:
            if cache_position is not None or prefill:
                raise ConfigError("cache_position or prefill was given without a KV cache")
            slots = torch.arange(length, device=inputs_embeds.device)
            kv_len = capacity = length
        else:
            if cache_position is None:
                cache_position = torch.arange(length, device=inputs_embeds.device)
            slots = cache_position
            capacity = cache.max_len
            kv_len = attend = length if prefill else capacity
        if attention_mask is not None and attention_mask.shape[1] > capacity:
            raise ConfigError(
                f"attention_mask covers {attention_mask.shape[1]} slots, more than the {capacity} available"
            )
        mask = None
        if attention_bias is not None:
            if cache is None or prefill or length != 1 or attention_mask is not None:
                raise ConfigError("attention_bias is for single-token steps over a KV cache, without attention_mask")
            mask = attention_bias
        elif attention_mask is not None:
            mask = build_attention_mask(slots, kv_len, attention_mask[:, :kv_len])
        elif cache is not None and not prefill:
            mask = build_attention_mask(slots, kv_len, None)
        # else: plain causal attention, and the causal flag lets SDPA pick its fastest kernel
        if group_queries:
            if cache is None or prefill or length != 1:
                raise ConfigError(
                    f"group_queries is for single-token decode steps over a KV cache; got {length} tokens, "
                    f"cache={'yes' if cache is not None else 'none'}, prefill={prefill}"
                )
            if attention_bias is None:  # the 0 / -inf form SDPA would build from the boolean mask in every layer
                mask = torch.zeros(mask.shape, dtype=inputs_embeds.dtype, device=mask.device).masked_fill_(
                    ~mask, float("-inf")
                )
        if regime is None:
            regime = self.regime_for(length if cache is None else int(cache_position[-1]) + 1)
        rope = self.rope.tables(position_ids, regime, inputs_embeds.dtype)
        h = inputs_embeds
        run = layer_forward or DecoderLayer.__call__
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else cache.layer(i)
            h = run(layer, h, rope, mask, kv, cache_position, attend, group_queries)
        return self.norm(h) if final_norm else h

    def _lora_layers(self) -> list[LoRALinear]:
        return [m for m in self.modules() if isinstance(m, LoRALinear)]

    @property
    def lora_state(self) -> LoraState:
        """``none`` (no adapter), ``unmerged`` (switchable) or ``merged`` (folded into the weights)."""
        layers = self._lora_layers()
        return layers[0].mode if layers else "none"

    def set_lora_enabled(self, enabled: bool) -> None:
        """Switch the adapter on (speech requests) or off (text-only requests, bare Phi-4-mini)."""
        layers = self._lora_layers()
        if not layers:
            if enabled:
                raise ConfigError("this decoder was built without a LoRA adapter; there is nothing to enable")
            return
        for layer in layers:
            layer.enabled = enabled

    def merge_lora_(self) -> None:
        """Fold the adapter into every target weight (fp32 merge); LoRA can no longer be switched off."""
        for layer in self._lora_layers():
            layer.merge_()
