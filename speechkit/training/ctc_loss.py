"""CTC loss that never makes the host wait for the GPU (Triton kernels), with ``F.ctc_loss`` as the fallback.

torch's CUDA CTC builds its length and label-offset arrays on the host and copies them to the device with
blocking copies: 8 synchronisations in the forward and 3 in the backward of every training step
(``eval/bench/train_syncs.py``), so a step's host work and device work add up instead of overlapping. Here
the lengths travel with non-blocking copies and two kernels do the work, one program per row over the
extended label sequence (blank, l1, blank, l2, ..., blank; S = 2L + 1 states, held in one block):

* forward: the log-space alpha recursion over the row's frames, every alpha kept (rows x frames x S floats)
  for the backward; the row's negative log-likelihood from the last two states;
* backward: the beta recursion from the last frame down, and at each frame the posterior occupancy of each
  state, gamma = exp(alpha + beta - log p(label) + nll), subtracted from the gradient of its label's log
  probability (scaled by the row's incoming gradient): the partial derivative with respect to the
  log-probabilities.

Labels that repeat inside a row share a gradient entry, so the backward adds with atomics: sums in a
different order from run to run, as torch's own CUDA CTC does. Used on CUDA when Triton is installed (it
comes with torch's CUDA wheels); elsewhere :func:`ctc_nll` calls ``F.ctc_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # torch's CUDA wheels bring Triton; without it (CPU installs) ctc_nll calls F.ctc_loss
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def triton_available() -> bool:
    return triton is not None


if triton is not None:  # kernels decorated at import: TRITON_INTERPRET=1 set before it runs them on the CPU

    @triton.jit
    def _states(s, tgt_ptr, off, length, blank):
        """Label of each extended state, and whether it may be entered from two states back (skip)."""
        n_states = 2 * length + 1
        valid = s < n_states
        odd = (s % 2) == 1
        index = (s - 1) // 2
        label = tl.where(odd, tl.load(tgt_ptr + off + index, mask=valid & odd, other=0), blank)
        before = tl.load(tgt_ptr + off + index - 1, mask=valid & odd & (s >= 3), other=-1)
        after = tl.load(tgt_ptr + off + index + 1, mask=valid & odd & (s + 2 < n_states), other=-1)
        into = odd & (s >= 3) & (label != before)  # s - 2 -> s
        out_of = odd & (s + 2 < n_states) & (label != after)  # s -> s + 2
        return n_states, valid, label, into, out_of

    @triton.jit
    def _lse3(a, b, c):
        top = tl.maximum(tl.maximum(a, b), c)
        safe = tl.where(top == float("-inf"), 0.0, top)
        total = tl.exp(a - safe) + tl.exp(b - safe) + tl.exp(c - safe)
        return tl.where(top == float("-inf"), float("-inf"), safe + tl.log(total))

    @triton.jit
    def _ctc_alpha(lp_ptr, lp_st, lp_sb, tgt_ptr, off_ptr, tlen_ptr, ilen_ptr, alpha_ptr, a_sb, a_st, nll_ptr,
                blank, BLOCK: tl.constexpr):  # fmt: skip
        row = tl.program_id(0)
        frames = tl.load(ilen_ptr + row)
        length = tl.load(tlen_ptr + row)
        off = tl.load(off_ptr + row)
        s = tl.arange(0, BLOCK)
        n_states, valid, label, into, _ = _states(s, tgt_ptr, off, length, blank)
        lp_row = lp_ptr + row * lp_sb
        a_row = alpha_ptr + row * a_sb
        a = tl.load(lp_row + label, mask=valid & (s < 2), other=float("-inf"))
        tl.store(a_row + s, a)
        for t in range(1, frames):
            tl.debug_barrier()  # alpha[t - 1] of every state is stored
            a1 = tl.load(a_row + (t - 1) * a_st + s - 1, mask=valid & (s >= 1), other=float("-inf"))
            a2 = tl.load(a_row + (t - 1) * a_st + s - 2, mask=into, other=float("-inf"))
            emit = tl.load(lp_row + t * lp_st + label, mask=valid, other=float("-inf"))
            a = tl.where(valid, _lse3(a, a1, a2) + emit, float("-inf"))
            tl.store(a_row + t * a_st + s, a)
        last = tl.where(valid & (s >= n_states - 2), a, float("-inf"))
        top = tl.max(last, axis=0)
        safe = tl.where(top == float("-inf"), 0.0, top)
        nll = -(safe + tl.log(tl.sum(tl.exp(last - safe), axis=0)))
        nll = tl.where((top == float("-inf")) | (frames < 1), float("inf"), nll)
        tl.store(nll_ptr + row, nll)

    @triton.jit
    def _ctc_beta_grad(lp_ptr, lp_st, lp_sb, tgt_ptr, off_ptr, tlen_ptr, ilen_ptr, alpha_ptr, a_sb, a_st, beta_ptr,
                 nll_ptr, scale_ptr, grad_ptr, g_st, g_sb, blank, BLOCK: tl.constexpr):  # fmt: skip
        row = tl.program_id(0)
        frames = tl.load(ilen_ptr + row)
        length = tl.load(tlen_ptr + row)
        off = tl.load(off_ptr + row)
        nll = tl.load(nll_ptr + row)
        # an impossible row (nll inf: zeroed by zero_infinity) or a zero incoming gradient adds nothing
        scale = tl.where(nll < float("inf"), tl.load(scale_ptr + row), 0.0)
        s = tl.arange(0, BLOCK)
        n_states, valid, label, _, out_of = _states(s, tgt_ptr, off, length, blank)
        lp_row = lp_ptr + row * lp_sb
        a_row = alpha_ptr + row * a_sb
        b_row = beta_ptr + row * 2 * BLOCK  # two frames of beta, alternating
        g_row = grad_ptr + row * g_sb
        emit = tl.load(lp_row + tl.maximum(frames - 1, 0) * lp_st + label, mask=valid, other=float("-inf"))
        b = tl.where(valid & (s >= n_states - 2), emit, float("-inf"))
        for step in range(0, frames):
            t = frames - 1 - step
            if step > 0:
                tl.debug_barrier()  # beta[t + 1] of every state is stored
                b1 = tl.load(b_row + ((t + 1) % 2) * BLOCK + s + 1, mask=valid & (s + 1 < n_states),
                             other=float("-inf"))  # fmt: skip
                b2 = tl.load(b_row + ((t + 1) % 2) * BLOCK + s + 2, mask=out_of, other=float("-inf"))
                emit = tl.load(lp_row + t * lp_st + label, mask=valid, other=float("-inf"))
                b = tl.where(valid, _lse3(b, b1, b2) + emit, float("-inf"))
            tl.store(b_row + (t % 2) * BLOCK + s, b)
            a = tl.load(a_row + t * a_st + s, mask=valid, other=float("-inf"))
            live = valid & (a > float("-inf")) & (b > float("-inf"))
            gamma = tl.exp(tl.where(live, a + b - emit + nll, float("-inf")))
            tl.atomic_add(g_row + t * g_st + label, -gamma * scale, mask=live)


class _TritonCtc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_probs, targets, offsets, target_lengths, input_lengths, blank: int, block: int):
        frames, rows, _ = log_probs.shape
        alpha = torch.empty(rows, max(frames, 1), block, device=log_probs.device, dtype=torch.float32)
        nll = torch.empty(rows, device=log_probs.device, dtype=torch.float32)
        _ctc_alpha[(rows,)](log_probs, log_probs.stride(0), log_probs.stride(1), targets, offsets, target_lengths,
                            input_lengths, alpha, alpha.stride(0), alpha.stride(1), nll, blank,
                            BLOCK=block)  # fmt: skip
        ctx.save_for_backward(log_probs, targets, offsets, target_lengths, input_lengths, alpha, nll)
        ctx.blank, ctx.block = blank, block
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        log_probs, targets, offsets, target_lengths, input_lengths, alpha, nll = ctx.saved_tensors
        rows = log_probs.shape[1]
        grad = torch.zeros_like(log_probs)
        beta = torch.empty(rows, 2, ctx.block, device=log_probs.device, dtype=torch.float32)
        _ctc_beta_grad[(rows,)](log_probs, log_probs.stride(0), log_probs.stride(1), targets, offsets,
                                target_lengths, input_lengths, alpha, alpha.stride(0), alpha.stride(1), beta, nll,
                                grad_nll.float().contiguous(), grad, grad.stride(0), grad.stride(1), ctx.blank,
                                BLOCK=ctx.block)  # fmt: skip
        return grad, None, None, None, None, None, None


def ctc_nll(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
            target_lengths: torch.Tensor, blank: int, use_triton: bool | None = None) -> torch.Tensor:  # fmt: skip
    """Per-row CTC negative log-likelihood, (R,) float32; 0, with a zero gradient, where a row cannot emit its
    labels in its frames (``zero_infinity``).

    Args:
        log_probs: (T, R, C) float32 log-probabilities (a log-softmax), frames first.
        targets: the rows' labels concatenated, int64, on ``log_probs``' device.
        input_lengths: (R,) int64 valid frames per row, on the host.
        target_lengths: (R,) int64 labels per row, on the host.
        use_triton: the Triton kernels (default: on CUDA when Triton is installed), else ``F.ctc_loss``.
    """
    if use_triton is None:
        use_triton = log_probs.is_cuda and triton_available()
    if not use_triton:
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank, reduction="none",
                          zero_infinity=True)  # fmt: skip
    device = log_probs.device
    states = 2 * int(target_lengths.max()) + 1 if len(target_lengths) else 1  # host lengths: no synchronisation
    block = max(16, 1 << (states - 1).bit_length())  # a power of two holding every row's states
    offsets = torch.cumsum(target_lengths, 0) - target_lengths
    # host -> device without a blocking copy: nothing on the device has to finish first
    move = lambda t: t.to(device, torch.int64, non_blocking=True).contiguous()  # noqa: E731
    nll = _TritonCtc.apply(log_probs.float().contiguous(), move(targets), move(offsets), move(target_lengths),
                           move(input_lengths), blank, block)  # fmt: skip
    return torch.where(torch.isinf(nll), torch.zeros_like(nll), nll)


def ctc_mean_loss(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                  target_lengths: torch.Tensor, blank: int,
                  use_triton: bool | None = None) -> torch.Tensor:  # fmt: skip
    """``F.ctc_loss(..., reduction="mean", zero_infinity=True)`` on :func:`ctc_nll`: each row's NLL over its
    label count (at least 1), averaged."""
    nll = ctc_nll(log_probs, targets, input_lengths, target_lengths, blank, use_triton)
    per_label = target_lengths.to(nll.device, nll.dtype, non_blocking=True).clamp(min=1)
    return (nll / per_label).mean()
