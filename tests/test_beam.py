"""Beam search on the tiny model (fp32, CPU): greedy at width 1, scores that teacher forcing reproduces (so the
KV cache rows follow their hypotheses), and the pipeline's --beam-size."""

from __future__ import annotations

import pytest
import torch
from decoding_helpers import prompted_clips

from speechkit.audio import SAMPLE_RATE, load_audio
from speechkit.errors import ConfigError
from speechkit.inference.beam import beam_search
from speechkit.inference.generate import generate
from speechkit.inference.pipeline import DecodeOptions, Pipeline
from speechkit.model.encoder import EncoderOutput
from speechkit.model.loader import load_speech_model
from speechkit.testing.audio import speechlike

PAD = 199999


def test_width_one_is_greedy(loaded):
    prompts, audio = prompted_clips(loaded, [3.0, 1.2, 2.1])  # unequal prompts: left padding
    caps = [20, 6, 12]
    free = generate(loaded.model, prompts, audio, max_new_tokens=caps, stop_ids=(), pad_id=PAD)
    for stop_ids in ((), (free[0].tokens[4],), loaded.tokenizer.stop_ids):
        kwargs = dict(max_new_tokens=caps, stop_ids=stop_ids, pad_id=PAD)
        greedy = generate(loaded.model, prompts, audio, **kwargs)
        beam = beam_search(loaded.model, prompts, audio, beam_size=1, **kwargs)
        assert [g.tokens for g in beam] == [g.tokens for g in greedy]
        assert [g.stop for g in beam] == [g.stop for g in greedy]
        assert [g.avg_logprob for g in beam] == pytest.approx([g.avg_logprob for g in greedy], abs=1e-5)


def _teacher_forced(loaded, prompt, audio, tokens):
    """Log-probabilities of each next token after ``prompt`` + ``tokens[:i]``, and of every id after all of them."""
    model = loaded.model
    ids = torch.tensor([prompt + list(tokens)])
    with torch.no_grad():
        hidden = model.decoder(model.embed_inputs(ids, audio), torch.arange(ids.shape[1])[None])
        logprobs = torch.log_softmax(model.decoder.logits(hidden[0]).float(), dim=-1)
    steps = logprobs[len(prompt) - 1 : -1].gather(1, torch.tensor(tokens, dtype=torch.long)[:, None]).squeeze(1)
    return steps, logprobs[-1]


@pytest.mark.parametrize("width", [2, 4])
def test_each_hypothesis_scores_as_teacher_forcing_does(loaded, width):
    # a hypothesis continued on another row's cache would score differently from a fresh forward pass of its tokens
    prompts, audio = prompted_clips(loaded, [2.5, 1.4])
    stop = generate(loaded.model, prompts, audio, max_new_tokens=[12, 12], stop_ids=(), pad_id=PAD)[0].tokens[3]
    out = beam_search(loaded.model, prompts, audio, beam_size=width, max_new_tokens=[12, 12], stop_ids=(stop,),
                      pad_id=PAD)  # fmt: skip
    for i, gen in enumerate(out):
        clip = EncoderOutput(audio.hidden[i : i + 1, : int(audio.lengths[i])], audio.lengths[i : i + 1])
        steps, after = _teacher_forced(loaded, prompts[i], clip, gen.tokens)
        total = float(steps.sum()) + (float(after[stop]) if gen.stop == "stop" else 0.0)
        sampled = len(gen.tokens) + (gen.stop == "stop")
        assert gen.avg_logprob == pytest.approx(total / sampled, abs=1e-4)
        assert gen.stop in ("stop", "length", "repetition")


def test_pipeline_decodes_with_beams(tiny_checkpoint):
    pipeline = Pipeline.load(str(tiny_checkpoint), device="cpu", dtype="float32")
    clips = [load_audio(speechlike(s, seed=s), sample_rate=SAMPLE_RATE) for s in (2, 1, 3)]
    options = DecodeOptions(batch_size=2, max_new_tokens=6, beam_size=3)
    results = pipeline.transcribe(clips, options=options)
    alone = [pipeline.transcribe([c], options=options)[0] for c in clips]
    assert [r.tokens for r in results] == [r.tokens for r in alone]  # batching clips x beams changes nothing
    with pytest.raises(ConfigError, match="beam_size=0 must be >= 1"):
        DecodeOptions(beam_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_width_one_is_greedy_on_gpu(tiny_checkpoint):
    loaded = load_speech_model(tiny_checkpoint, device=torch.device("cuda"), dtype=torch.float32, lora="merged")
    prompts, audio = prompted_clips(loaded, [2.0, 1.1])
    kwargs = dict(max_new_tokens=[10, 6], stop_ids=loaded.tokenizer.stop_ids, pad_id=PAD)
    greedy = generate(loaded.model, prompts, audio, **kwargs)
    assert [g.tokens for g in beam_search(loaded.model, prompts, audio, beam_size=1, **kwargs)] == [
        g.tokens for g in greedy
    ]


def test_width_one_is_greedy_across_the_long_rope_switch(loaded):
    # a prompt ending just before LongRoPE's switch: the prefix is recomputed under the long factors mid-search
    prompts, audio = prompted_clips(loaded, [1.0])
    threshold = loaded.config.decoder.rope.original_max_position_embeddings
    filler = loaded.tokenizer.encode(" la") * (threshold - len(prompts[0]) - 2)
    prompts = [prompts[0][:-2] + filler + prompts[0][-2:]]
    kwargs = dict(max_new_tokens=[6], stop_ids=(), pad_id=PAD, detect_loops=False)
    greedy = generate(loaded.model, prompts, audio, **kwargs)
    beam = beam_search(loaded.model, prompts, audio, beam_size=1, **kwargs)
    assert len(prompts[0]) < threshold < len(prompts[0]) + 6
    assert [g.tokens for g in beam] == [g.tokens for g in greedy]
    assert beam[0].avg_logprob == pytest.approx(greedy[0].avg_logprob, abs=1e-5)
