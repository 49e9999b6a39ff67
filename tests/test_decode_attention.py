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
    """On the CPU, fp32: the kernel against the written-out step (rotary, cache writes, attention) for rows hiding
    different cache tails (one sees only the new slot), chunks of whole and partial blocks, empty chunks (more
    chunks than blocks), the step's slot in the first, a middle and the last chunk: outputs equal to 1e-5, the
    caches after it too (the rotated key and the value at the slot, nothing else touched)."""
    from speechkit.model.attention import grouped_step_attention
    from speechkit.model.kv_cache import write_slots
    from speechkit.model.rope import RopeTables, apply_rotary

    gen = torch.Generator().manual_seed(0)
    heads, kv_heads, head_dim, rotary = 6, 2, 32, 24
    for batch, slots, parts, slot in ((1, 200, 1, 150), (2, 130, 4, 0), (3, 64, 8, 63), (1, 486, 2, 300)):
        qkv = torch.randn(batch, 1, (heads + 2 * kv_heads) * head_dim, generator=gen)
        angles = torch.rand(batch, 1, rotary // 2, generator=gen) * 6.0
        rope = RopeTables(torch.cat([angles.cos()] * 2, -1) * 1.1, torch.cat([angles.sin()] * 2, -1) * 1.1)
        caches = torch.randn(2, batch, kv_heads, slots, head_dim, generator=gen)
        bias = torch.zeros(batch, 1, 1, slots)
        bias[0, ..., slot + 1 :] = float("-inf")
        bias[0, ..., :slot] = float("-inf")  # row 0 sees the new slot only
        if batch > 1:
            bias[1, ..., slot + 1 :] = float("-inf")
        position = torch.tensor([slot])

        k_ref, v_ref = caches.clone()
        split = qkv.view(batch, 1, heads + 2 * kv_heads, head_dim)
        qk = apply_rotary(split[:, :, : heads + kv_heads].transpose(1, 2), rope)
        q, k = qk.split([heads, kv_heads], dim=1)
        k_ref, v_ref = write_slots((k_ref, v_ref), position, k, split[:, :, heads + kv_heads :].transpose(1, 2))
        ref = grouped_step_attention(q, k_ref, v_ref, bias).reshape(batch, heads * head_dim)

        k_out, v_out = caches.clone()
        out = decode_attention.decode_step_attention(qkv[:, 0], rope.cos[:, 0], rope.sin[:, 0], k_out, v_out,
                                                     position, bias.reshape(batch, slots), heads, parts)  # fmt: skip
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(k_out, k_ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(v_out, v_ref, rtol=0, atol=0)


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

    chunk = dict.fromkeys(("qkv_ptr", "cos_ptr", "sin_ptr", "k_ptr", "v_ptr", "bias_ptr"), "*bf16") | {
        "slot_ptr": "*i64", "acc_ptr": "*fp32", "max_ptr": "*fp32", "sum_ptr": "*fp32"} | dict.fromkeys(
        ("qkv_sb", "rope_sb", "k_sb", "k_sh", "k_ss", "v_sb", "v_sh", "v_ss", "bias_sb", "kv_heads", "slots",
         "chunk"), "i32")  # fmt: skip
    sizes = {"GROUP": 3, "ROWS": 16, "HEAD_DIM": 128}
    merge = {"acc_ptr": "*fp32", "max_ptr": "*fp32", "sum_ptr": "*fp32", "out_ptr": "*bf16"}
    for kernel, signature, constexprs in (
        (decode_attention._chunk_kernel, chunk,
         sizes | {"HEADS": 24, "ROTARY": 96, "BLOCK": 64, "PRECISION": "tf32", "SCALE": 128**-0.5, "PDL": True}),
        (decode_attention._merge_kernel, merge, sizes | {"PARTS": 4}),
    ):
        signature = signature | dict.fromkeys(constexprs, "constexpr")
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        assert "cubin" in triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm
