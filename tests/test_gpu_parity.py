"""Full-size numerics on a GPU (marked ``gpu``; CI skips them): encoder + projector and the whole model
vs the transformers port on the same random weights, fp32 and bf16.

Run: ``python -m pytest -m gpu -s tests/test_gpu_parity.py`` on a CUDA machine; the errors are printed.
Error metric: max|ours - ref| / max|ref|. bf16 passes when ours is within 1.5x of the port's own
bf16-vs-fp32 error.
"""

from __future__ import annotations

import copy

import pytest
import torch

from speechkit.audio import LogMelFrontend
from speechkit.model.config import SpeechModelConfig
from speechkit.model.speech_model import SpeechModel
from speechkit.testing.audio import speechlike
from speechkit.testing.checkpoint import randomize_, released_config
from speechkit.testing.compare import relative_error
from speechkit.testing.reference import port_causal_lm, port_speech_embeddings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
AUDIO_TOKEN = 200011


@pytest.fixture(scope="module")
def fp32_pair():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    official = released_config()
    config = SpeechModelConfig.from_official(official)
    with torch.device("cuda"):
        ours = SpeechModel(config, AUDIO_TOKEN).eval()
    randomize_(ours, seed=0)
    port = port_causal_lm(official, ours.state_dict(), lora_scale=config.speech_lora.scale, attn="sdpa")
    return official, config, ours, port


def _features(seconds: float, seed: int) -> torch.Tensor:
    return LogMelFrontend("cuda")([speechlike(seconds, seed=seed)]).values


def _report(name: str, value: float) -> None:
    print(f"\n[gpu-parity] {name}: {value:.3e}")


def _port_audio(port, feats):
    return port_speech_embeddings(port.model.embed_tokens_extend.audio_embed, feats)


@torch.no_grad()
def test_encoder_full_size(fp32_pair):
    _, _, ours, port = fp32_pair
    for seconds in (30.0, 70.0):  # one window, and two windows (> 500 tokens)
        feats = _features(seconds, seed=int(seconds))
        err = relative_error(ours.audio(feats).hidden, _port_audio(port, feats))
        _report(f"encoder+projector fp32 {seconds:.0f}s", err)
        assert err <= 1e-5
    # bf16 copies of both towers: ours must stay within 1.5x of the port's own bf16-vs-fp32 error
    ours16 = copy.deepcopy(ours.audio).to(torch.bfloat16)
    port16 = copy.deepcopy(port.model.embed_tokens_extend.audio_embed).to(torch.bfloat16)
    for seconds in (30.0, 70.0):
        feats = _features(seconds, seed=int(seconds))
        ref = _port_audio(port, feats).float()
        ours_err = relative_error(ours16(feats).hidden.float(), ref)
        port_err = relative_error(port_speech_embeddings(port16, feats).float(), ref)
        _report(f"encoder+projector bf16 {seconds:.0f}s: ours vs port fp32", ours_err)
        _report(f"encoder+projector bf16 {seconds:.0f}s: port bf16 vs port fp32", port_err)
        assert ours_err <= 1.5 * port_err
    del ours16, port16
    # a padded batch equals its items one by one
    items = [_features(s, seed=s) for s in (5, 30, 70)]
    batch = torch.zeros(3, max(x.shape[1] for x in items), 80, device="cuda")
    for i, x in enumerate(items):
        batch[i, : x.shape[1]] = x[0]
    out = ours.audio(batch, torch.tensor([x.shape[1] for x in items]))
    for i, x in enumerate(items):
        single = ours.audio(x).hidden[0]
        err = relative_error(out.hidden[i, : single.shape[0]], single)
        _report(f"padded batch vs single, item {i}", err)
        assert err <= 1e-5


def _prompt_ids(n_audio: int, continuation: torch.Tensor) -> torch.Tensor:
    # the released tokenizer is not here: build the chat form from the released special ids
    user, end, assistant = 200021, 200020, 200019
    instruction = torch.randint(1000, 50000, (8,), generator=torch.Generator().manual_seed(1))
    ids = [user] + [AUDIO_TOKEN] * n_audio + instruction.tolist() + [end, assistant] + continuation.tolist()
    return torch.tensor([ids], device="cuda")


@torch.no_grad()
def test_whole_model_full_size_fp32_and_bf16(fp32_pair):
    official, config, ours, port = fp32_pair
    feats = _features(30.0, seed=3)
    n_audio = -(-feats.shape[1] // 8)
    continuation = torch.randint(0, 199000, (64,), generator=torch.Generator().manual_seed(2))
    ids = _prompt_ids(n_audio, continuation)
    sizes = torch.tensor([n_audio], device="cuda")

    def ours_logits(model):
        audio = model.audio(feats)
        hidden = model.decoder(model.embed_inputs(ids, audio), torch.arange(ids.shape[1], device="cuda")[None])
        return model.decoder.logits(hidden[:, -64:]).float()

    def port_logits(model):
        return model(
            input_ids=ids, audio_input_features=feats, audio_embed_sizes=sizes, logits_to_keep=64
        ).logits.float()

    ref32 = port_logits(port)
    ours32 = ours_logits(ours)  # unmerged LoRA: official numerics
    err32 = relative_error(ours32, ref32)
    _report("whole model fp32, unmerged LoRA, 30 s + 64 forced tokens", err32)
    assert err32 <= 1e-5

    port16 = port.to(torch.bfloat16)
    ref16 = port_logits(port16)
    port_err = relative_error(ref16, ref32)
    del port16, port
    ours16 = ours.to(torch.bfloat16)
    unmerged16 = ours_logits(ours16)
    ours16.decoder.merge_lora_()
    merged16 = ours_logits(ours16)
    for name, logits in (("unmerged", unmerged16), ("merged", merged16)):
        err = relative_error(logits, ref32)
        top1 = (logits.argmax(-1) == ref32.argmax(-1)).float().mean().item()
        _report(f"whole model bf16 {name} vs port fp32", err)
        _report(f"top-1 agreement bf16 {name} vs port fp32", top1)
        assert err <= 1.5 * port_err
    _report("port bf16 vs port fp32", port_err)
    _report("top-1 agreement port bf16 vs port fp32", (ref16.argmax(-1) == ref32.argmax(-1)).float().mean().item())


@torch.no_grad()
def test_fast_path_matches_plain_bf16(fp32_pair):
    """The CUDA-graph decode step, teacher-forced on a fixed 64-token continuation, vs one plain forward: with the
    speech LoRA unmerged (cuBLAS products; skipped once an earlier test merged it) and merged (the loader's default:
    the batch-1 step's fused matrix-vector kernels)."""
    _, _, ours, _ = fp32_pair
    model = ours.to(torch.bfloat16)  # the fp32 tests above have run; bf16 from here on
    if model.decoder.lora_state == "unmerged":
        _fast_vs_plain(model, "unmerged LoRA")
        model.decoder.merge_lora_()
    _fast_vs_plain(model, "merged LoRA")


def _fast_vs_plain(model, name: str) -> None:
    from speechkit.inference.fast_generate import DecodeStep

    feats = _features(30.0, seed=5)
    n_audio = -(-feats.shape[1] // 8)
    continuation = torch.randint(0, 199000, (64,), generator=torch.Generator().manual_seed(4))
    ids = _prompt_ids(n_audio, continuation)
    prompt_len = ids.shape[1] - 64
    audio = model.audio(feats)
    embeds = model.embed_inputs(ids, audio)
    plain = model.decoder.logits(model.decoder(embeds, torch.arange(ids.shape[1], device="cuda")[None]))
    plain = plain[0, prompt_len - 1 : -1].float()  # predictions for the 64 continuation tokens

    total = ids.shape[1]
    cache = model.decoder.allocate_cache(1, total)
    mask = torch.ones(1, total, dtype=torch.long, device="cuda")
    step = DecodeStep(model, cache, mask, model.decoder.regime_for(total), use_graph=True)
    hidden = model.decoder(embeds[:, :prompt_len], torch.arange(prompt_len, device="cuda")[None], cache=cache,
                           prefill=True)  # fmt: skip
    fast = [model.decoder.logits(hidden[:, -1]).float()[0]]
    step.slot.fill_(prompt_len)
    step.position.fill_(prompt_len)
    for k in range(63):
        step.token.fill_(int(continuation[k]))  # teacher forcing: overwrite the step's own argmax
        step()
        fast.append(step.logits[0].clone())
    fast = torch.stack(fast)
    err = relative_error(fast, plain)
    top1 = (fast.argmax(-1) == plain.argmax(-1)).float().mean().item()
    _report(f"fast (CUDA graph) vs plain, bf16, {name}, 64 forced tokens", err)
    _report(f"top-1 agreement fast vs plain bf16, {name}", top1)
    assert err <= 0.05 and top1 >= 0.9  # bf16 noise: the port's own bf16-vs-fp32 error is ~8e-2
