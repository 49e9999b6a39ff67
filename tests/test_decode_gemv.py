"""The batch-1 decode step's fused matrix-vector kernels against the written-out layer (Triton's interpreter on the
CPU, an sm_90 compile check without a GPU; on a GPU the fast-path tests of tests/test_fast_generate.py and
tests/test_gpu_parity.py run them)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from speechkit.model import decode_gemv


def compare_with_written_out() -> None:
    """On the CPU, fp32: each fused form of the kernel equals the products it replaces to 1e-5, at widths that are
    and are not multiples of the tile, then a whole decoder layer's step through the kernels equals its own
    forward."""
    from speechkit.model.decoder import RMSNorm

    gen = torch.Generator().manual_seed(0)
    for rows_out, width in ((37, 200), (64, 1024), (5, 1500)):
        x = torch.randn(1, 1, width, generator=gen)
        weight = torch.randn(rows_out, width, generator=gen) * width**-0.5
        gate_up = torch.randn(2 * rows_out, width, generator=gen) * width**-0.5
        residual = torch.randn(1, 1, rows_out, generator=gen)
        norm = RMSNorm(width, eps=1e-5)
        norm.weight.data = torch.rand(width, generator=gen) + 0.5
        gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
        cases = (
            (decode_gemv.decode_linear(x, weight, None, 0.0, None, False), F.linear(x, weight)),
            (decode_gemv.decode_linear(x, weight, norm.weight, 1e-5, None, False), F.linear(norm(x), weight)),
            (decode_gemv.decode_linear(x, gate_up, None, 0.0, None, True), up * F.silu(gate)),
            (decode_gemv.decode_linear(x, weight, None, 0.0, residual, False), residual + F.linear(x, weight)),
        )
        for ours, ref in cases:
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # bf16 in, fp32 logits out: the product rounded to bf16 first, as the plain path's logits().float()
    x, weight = torch.randn(1, 300).bfloat16(), (torch.randn(70, 300) / 17).bfloat16()
    norm = RMSNorm(300, eps=1e-5).bfloat16()
    logits = decode_gemv.decode_linear(x, weight, norm.weight, 1e-5, None, False, True)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, F.linear(norm(x), weight).float(), rtol=1e-2, atol=1e-2)
    assert torch.equal(logits, logits.bfloat16().float())

    # attention with its chunk merge inside o_proj's kernel = the attention's own merge, then the product
    from speechkit.model import decode_attention

    heads, kv_heads, head_dim, hidden = 6, 2, 32, 48
    for parts, slot in ((2, 100), (4, 0)):
        qkv = torch.randn(1, (heads + 2 * kv_heads) * head_dim, generator=gen)
        cos, sin = torch.rand(2, 1, 24, generator=gen)
        caches = torch.randn(2, 1, kv_heads, 130, head_dim, generator=gen)
        bias = torch.zeros(1, 130)
        bias[:, slot + 1 :] = float("-inf")
        o_weight = torch.randn(hidden, heads * head_dim, generator=gen) / 14
        residual = torch.randn(1, 1, hidden, generator=gen)
        k_ref, v_ref = caches.clone()
        attended = decode_attention.decode_step_attention(qkv, cos, sin, k_ref, v_ref, torch.tensor([slot]), bias,
                                                          heads, parts)  # fmt: skip
        ref = decode_gemv.decode_linear(attended[None], o_weight, None, 0.0, residual, False)
        k_out, v_out = caches.clone()
        out = decode_gemv.decode_attention_o(qkv, cos, sin, k_out, v_out, torch.tensor([slot]), bias, heads, parts,
                                             o_weight, residual)  # fmt: skip
        assert out.shape == residual.shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(k_out, k_ref) and torch.equal(v_out, v_ref)

    # the layer: the operator's CPU kernel is registered here only (the package registers CUDA)
    library = torch.library.Library("speechkit", "IMPL")
    library.impl("decode_linear", decode_gemv.decode_linear, "CPU")
    from speechkit.testing.checkpoint import random_speech_model, tiny_config

    decoder = random_speech_model(tiny_config(), 200011, device="cpu", dtype=torch.float32).decoder
    decoder.merge_lora_()  # as the decode step runs it: every weight and norm random, the adapter folded in
    cache = decoder.allocate_cache(1, 16)
    ids = torch.randint(0, 100, (1, 11), generator=gen)
    with torch.no_grad():
        decoder(decoder.embed(ids[:, :10]), torch.arange(10)[None], cache=cache, prefill=True)
        mask = torch.zeros(1, 1, 1, 16)
        rope = decoder.rope.tables(torch.tensor([[10]]), decoder.regime_for(11), torch.float32)
        layer, kv, slot = decoder.layers[0], cache.layer(0), torch.tensor([10])
        x = decoder.embed(ids[:, 10:])
        weights = tuple(m.dense_weight() for m in (layer.self_attn.qkv_proj, layer.self_attn.o_proj,
                                                   layer.mlp.gate_up_proj, layer.mlp.down_proj))  # fmt: skip
        ours = layer._gemv_step(x, weights, rope, mask, kv, slot, None)
        ref = layer(x, rope, mask, kv, slot, None, True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_kernel_equals_the_written_out_products_in_the_interpreter():
    # TRITON_INTERPRET must be set before Triton is imported: a fresh interpreter
    pytest.importorskip("triton", minversion="3.9")
    code = "import sys; sys.path.insert(0, 'tests'); import test_decode_gemv as t; t.compare_with_written_out()"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True,
                          env=os.environ | {"TRITON_INTERPRET": "1"}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("norm, gated, residual, merge, prefetch", [
    (True, False, False, False, True), (False, False, True, False, False), (True, True, False, False, True),
    (True, True, False, False, False), (False, False, True, True, True)])  # fmt: skip
def test_kernel_compiles_for_hopper(norm, gated, residual, merge, prefetch):
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = {"BLOCK_ROWS": 8, "BLOCK_COLS": 512, "NORM": norm, "GATED": gated, "RESIDUAL": residual,
                  "MERGE": merge, "PARTS": 2, "GROUP": 3, "ROWS": 16, "HEAD_DIM": 128, "PDL": True,
                  "PREFETCH": prefetch}  # fmt: skip
    signature = dict.fromkeys(("w_ptr", "x_ptr", "norm_ptr", "residual_ptr", "y_ptr"), "*bf16")
    if merge:
        signature["x_ptr"] = "*fp32"
    signature |= {"top_ptr": "*fp32", "total_ptr": "*fp32", "rows_out": "i32", "width": "i32", "eps": "fp32"}
    signature |= dict.fromkeys(constexprs, "constexpr")
    source = ASTSource(fn=decode_gemv._gemv_kernel, signature=signature, constexprs=constexprs)
    assert "griddepcontrol.wait" in triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["ptx"]


def test_tiles_fit_the_input_width():
    pytest.importorskip("triton")
    assert decode_gemv.tile(3072, 8192, False) == (8, 1024, 8)
    assert decode_gemv.tile(5120, 3072, False) == (4, 512, 4)
    assert decode_gemv.tile(8192, 3072, True) == (8, 512, 4)
    assert decode_gemv.tile(48, 100, False)[1] == 128


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape, norm, gated, residual", [((5120, 3072), True, False, False),
                                                          ((3072, 3072), False, False, True),
                                                          ((16384, 3072), True, True, False),
                                                          ((3072, 8192), False, False, True),
                                                          ((200064, 3072), True, False, False)])  # fmt: skip
def test_kernel_on_gpu_matches_fp32_at_the_released_shapes(shape, norm, gated, residual):
    # bf16 inputs and output: the bound is the output's bf16 rounding (the unfused layer's own error)
    gen = torch.Generator(device="cuda").manual_seed(shape[0])
    rows, width = shape
    w = (torch.randn(rows, width, generator=gen, device="cuda") * width**-0.5).bfloat16()
    x = torch.randn(1, 1, width, generator=gen, device="cuda").bfloat16()
    g = (torch.rand(width, generator=gen, device="cuda") + 0.5).bfloat16() if norm else None
    r = torch.randn(1, 1, rows, generator=gen, device="cuda").bfloat16() if residual else None
    xf = x.float()
    if norm:
        xf = g.float() * F.rms_norm(xf, (width,), eps=1e-5)
    ref = F.linear(xf, w.float())
    if gated:
        gate, up = ref.chunk(2, dim=-1)
        ref = up * F.silu(gate)
    if residual:
        ref = ref + r.float()
    logits = rows > 65536  # the LM head: fp32 out
    out = torch.ops.speechkit.decode_linear(x, w, g, 1e-5, r, gated, logits)
    assert out.dtype == (torch.float32 if logits else torch.bfloat16)
    out = out.float()
    assert ((out - ref).abs().max() / ref.abs().max()).item() <= 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_merged_attention_output_on_gpu_matches_the_merge_kernel():
    # bf16 at the released shapes: the o_proj kernel's own merge of the attention chunks = the merge kernel's output
    # fed to the plain o_proj kernel (both round the merged rows to bf16; only the sums' order may differ)
    from speechkit.model import decode_attention

    gen = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(1, 40 * 128, generator=gen, device="cuda").bfloat16()
    cos, sin = torch.rand(2, 1, 96, generator=gen, device="cuda").bfloat16()
    caches = torch.randn(2, 1, 8, 512, 128, generator=gen, device="cuda").bfloat16()
    bias = torch.zeros(1, 512, device="cuda", dtype=torch.bfloat16)
    bias[:, 487:] = float("-inf")
    o_weight = (torch.randn(3072, 3072, generator=gen, device="cuda") / 55).bfloat16()
    residual = torch.randn(1, 1, 3072, generator=gen, device="cuda").bfloat16()
    slot = torch.tensor([486], device="cuda")
    k_ref, v_ref = caches.clone()
    attended = decode_attention.decode_step_attention(qkv, cos, sin, k_ref, v_ref, slot, bias, 24, 2)
    ref = decode_gemv.decode_linear(attended[None], o_weight, None, 0.0, residual, False).float()
    k_out, v_out = caches.clone()
    out = torch.ops.speechkit.decode_attention_o(qkv, cos, sin, k_out, v_out, slot, bias, 24, 2, o_weight, residual)
    assert ((out.float() - ref).abs().max() / ref.abs().max()).item() <= 1e-2
    assert torch.equal(k_out, k_ref) and torch.equal(v_out, v_ref)



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_programmatic_dependent_launches_in_a_graph_equal_plain_ones(monkeypatch):
    # a chain of kernels each reading the one before's output, captured in a CUDA graph: launched as programmatic
    # dependents (each may start before the one before ends) they must give the plain launches' bits exactly
    from speechkit.model import decode_attention

    gen = torch.Generator(device="cuda").manual_seed(0)
    gate_up = (torch.randn(16384, 3072, generator=gen, device="cuda") / 55).bfloat16()
    down = (torch.randn(3072, 8192, generator=gen, device="cuda") / 90).bfloat16()
    norm = (torch.rand(3072, generator=gen, device="cuda") + 0.5).bfloat16()
    x = torch.randn(1, 3072, generator=gen, device="cuda").bfloat16()
    outputs = {}
    for pdl in (False, True):
        monkeypatch.setattr(decode_attention, "PDL", pdl)

        def chain():
            h = x
            for _ in range(24):  # a layer's MLP: gate_up with its norm, down with the residual
                act = torch.ops.speechkit.decode_linear(h, gate_up, norm, 1e-5, None, True)
                h = torch.ops.speechkit.decode_linear(act, down, None, 0.0, h, False)
            return h

        chain()  # compile before the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = chain()
        for _ in range(3):
            graph.replay()
        outputs[pdl] = out.clone()
    assert torch.isfinite(outputs[False]).all()
    assert torch.equal(outputs[True], outputs[False])
