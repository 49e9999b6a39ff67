"""The decode step's Triton attention kernel against the written-out form (interpreter on CPU, sm_90 compile
check without a GPU, bf16 at the released shapes on a GPU in tests/test_fast_generate.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechkit.model import decode_attention


def compare_with_written_out() -> None:
    """On the CPU, fp32: rows hiding different cache tails (one sees a single slot), chunks of whole and partial
    blocks, empty chunks (more chunks than blocks): the kernel equals the written-out attention to 1e-5."""
    from speechkit.model.attention import grouped_step_attention

    device = "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    for batch, slots, parts in ((1, 200, 1), (2, 130, 4), (3, 64, 8), (1, 486, 2)):
        q = torch.randn(batch, 6, 1, 32, generator=gen, device=device)
        k, v = torch.randn(2, batch, 2, slots, 32, generator=gen, device=device)
        bias = torch.zeros(batch, 1, 1, slots, device=device)
        bias[0, ..., 1:] = float("-inf")
        if batch > 1:
            bias[1, ..., slots // 2 :] = float("-inf")
        ref = grouped_step_attention(q, k, v, bias)
        out = decode_attention.grouped_decode_attention(q.reshape(batch, 2, 3, 32), k, v, bias.reshape(batch, slots),
                                                        parts)  # fmt: skip
        torch.testing.assert_close(out.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5)


def test_kernel_equals_the_written_out_attention_in_the_interpreter():
    # TRITON_INTERPRET must be set before Triton is imported: a fresh interpreter
    pytest.importorskip("triton", minversion="3.9")
    code = "import sys; sys.path.insert(0, 'tests'); import test_decode_attention as t; t.compare_with_written_out()"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True,
                          env=os.environ | {"TRITON_INTERPRET": "1"}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_kernels_compile_for_hopper():
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    chunk = {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "bias_ptr": "*bf16", "acc_ptr": "*fp32",
             "max_ptr": "*fp32", "sum_ptr": "*fp32"} | dict.fromkeys(
        ("q_sb", "q_sh", "q_sg", "k_sb", "k_sh", "k_ss", "v_sb", "v_sh", "v_ss", "bias_sb", "kv_heads", "slots",
         "chunk"), "i32")  # fmt: skip
    sizes = {"GROUP": 3, "ROWS": 16, "HEAD_DIM": 128}
    merge = {"acc_ptr": "*fp32", "max_ptr": "*fp32", "sum_ptr": "*fp32", "out_ptr": "*bf16"}
    for kernel, signature, constexprs in (
        (decode_attention._chunk_kernel, chunk, sizes | {"BLOCK": 64, "PRECISION": "tf32", "SCALE": 128**-0.5}),
        (decode_attention._merge_kernel, merge, sizes | {"PARTS": 4}),
    ):
        signature = signature | dict.fromkeys(constexprs, "constexpr")
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        assert "cubin" in triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm
