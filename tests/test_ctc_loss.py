"""The Triton CTC loss against torch's F.ctc_loss: values and gradients, on the CPU through Triton's
interpreter (where Triton is installed) and on a GPU, where it must also never wait for the device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from speechkit.training import ctc_loss

# rows: repeated labels (1 1), a doubled label next to itself (4 4, 6 6), a row too short for its 5 labels
# (zero_infinity), an empty transcript, and frames of padding beyond the shorter rows
INPUT_LENGTHS = torch.tensor([12, 10, 7, 3, 5])
TARGETS = [[1, 1, 2], [3, 4, 4, 5], [6, 6], [1, 2, 3, 4, 5], []]


def _case(blank: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(blank)
    logits = torch.randn(12, len(TARGETS), 7, generator=gen).to(device).requires_grad_()
    relabel = [[c if c != blank else 0 for c in row] for row in TARGETS]  # the blank never appears as a label
    targets = torch.tensor([c for row in relabel for c in row], dtype=torch.int64, device=device)
    return logits, targets, torch.tensor([len(row) for row in relabel])


def _compare(module, blank: int, device: str) -> None:
    logits, targets, target_lengths = _case(blank, device)
    weights = torch.arange(1.0, len(TARGETS) + 1, device=device)  # a different incoming gradient per row
    results = []
    for use_triton in (False, True):
        logits.grad = None
        log_probs = logits.log_softmax(-1)
        nll = module.ctc_nll(log_probs, targets, INPUT_LENGTHS, target_lengths, blank, use_triton)
        mean = module.ctc_mean_loss(log_probs, targets, INPUT_LENGTHS, target_lengths, blank, use_triton)
        ((nll * weights).sum() + mean).backward()
        results.append((nll.detach(), mean.detach(), logits.grad.clone()))
    (ref_nll, ref_mean, ref_grad), (nll, mean, grad) = results
    assert nll[3] == 0 and torch.isfinite(grad).all()
    torch.testing.assert_close(nll, ref_nll, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)
    expected = F.ctc_loss(logits.log_softmax(-1), targets, INPUT_LENGTHS, target_lengths, blank=blank,
                          reduction="mean", zero_infinity=True)  # fmt: skip
    torch.testing.assert_close(mean, expected.detach(), rtol=1e-5, atol=1e-5)


def test_triton_ctc_equals_torch_ctc_in_the_interpreter():
    # Triton's interpreter runs kernels on CPU tensors, but only when TRITON_INTERPRET is set before Triton is
    # imported (its own reductions are kernels too): a fresh interpreter, blanks first and last. Older
    # interpreters cannot run a loop bounded by a loaded value (the Triton that comes with torch 2.11 on the GPU
    # machine fails inside `range`); there the GPU test below checks the compiled kernels instead.
    pytest.importorskip("triton", minversion="3.9")
    code = ("import sys; sys.path.insert(0, 'tests'); import test_ctc_loss as t; "
            "from speechkit.training import ctc_loss; t._compare(ctc_loss, 0, 'cpu'); t._compare(ctc_loss, 6, 'cpu')")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True,
                          env=os.environ | {"TRITON_INTERPRET": "1"}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_without_triton_on_the_cpu_it_is_torch_ctc():
    logits, targets, target_lengths = _case(0)
    log_probs = logits.log_softmax(-1)
    expected = F.ctc_loss(log_probs, targets, INPUT_LENGTHS, target_lengths, reduction="none", zero_infinity=True)
    torch.testing.assert_close(ctc_loss.ctc_nll(log_probs, targets, INPUT_LENGTHS, target_lengths, 0), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("blank", [0, 6])
def test_triton_ctc_on_gpu_equals_torch_and_never_waits(blank):
    _compare(ctc_loss, blank, "cuda")
    logits, targets, target_lengths = _case(blank, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host wait for the device raises
    try:
        loss = ctc_loss.ctc_mean_loss(logits.log_softmax(-1), targets, INPUT_LENGTHS, target_lengths, blank)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(logits.grad).all()


def test_triton_ctc_kernels_compile_for_hopper():
    # the interpreter runs Python, not Triton's compiler: this checks that both kernels lower to sm_90 code
    # (loop-carried types, the runtime branch, the atomics) without a GPU
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    common = {"lp_ptr": "*fp32", "lp_st": "i32", "lp_sb": "i32", "tgt_ptr": "*i64", "off_ptr": "*i64",
              "tlen_ptr": "*i64", "ilen_ptr": "*i64", "alpha_ptr": "*fp32", "a_sb": "i32", "a_st": "i32"}  # fmt: skip
    forward = {**common, "nll_ptr": "*fp32", "blank": "i32", "BLOCK": "constexpr"}
    backward = {**common, "beta_ptr": "*fp32", "nll_ptr": "*fp32", "scale_ptr": "*fp32", "grad_ptr": "*fp32",
                "g_st": "i32", "g_sb": "i32", "blank": "i32", "BLOCK": "constexpr"}  # fmt: skip
    for kernel, signature in ((ctc_loss._ctc_alpha, forward), (ctc_loss._ctc_beta_grad, backward)):
        source = ASTSource(fn=kernel, signature=signature, constexprs={"BLOCK": 512})
        assert "cubin" in triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm
