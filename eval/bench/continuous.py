"""Continuous batching against fixed batches, side by side: the same requests, the same decode step.

    python eval/bench/continuous.py --out DIR [--requests 256] [--width 64]   # full-size random model, GPU
    python eval/bench/continuous.py --out DIR --tiny --requests 12 --width 4  # tiny model on CPU (checks it)

Requests are 30 s clips (``gpu.py``'s) with forced output lengths drawn from 20-200 tokens (no stop ids, loop
detection off), so rows of one fixed batch finish at different steps, as real outputs do. Fixed: length-sorted
batches of ``width`` through ``generate_fast`` (a kept step, as the pipeline decodes). Continuous:
``generate_continuous`` with ``width`` rows. Both after one warm-up pass; the audio embeddings are computed
once beforehand (decoding only). Writes ``DIR/continuous.json``: wall seconds, generated tokens/s, the
speed-up, and how many requests came out with the same tokens both ways (bf16: summation order differs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from gpu import AUDIO_TOKEN, _clips, _our_model, _prompt  # eval/bench/gpu.py

from speechkit.audio import LogMelFrontend
from speechkit.inference.continuous import generate_continuous
from speechkit.inference.fast_generate import StepCache, generate_fast
from speechkit.model.encoder import EncoderOutput


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = _our_model(tiny=args.tiny)
    device = model.decoder.embed_tokens.weight.device
    frontend = LogMelFrontend(device)
    clips = _clips(args.requests)
    hidden, lengths = [], []
    for first in range(0, len(clips), args.width):
        feats = frontend(clips[first : first + args.width])
        audio = model.audio(feats.values.to(device), feats.lengths.to(device))
        hidden.extend(audio.hidden.unbind(0))
        lengths.extend(audio.lengths.tolist())
    prompts = [_prompt(n) for n in lengths]
    caps = np.random.default_rng(0).integers(20, 201, len(prompts)).tolist()
    common = dict(stop_ids=(), detect_loops=False)
    assert all(p.count(AUDIO_TOKEN) == n for p, n in zip(prompts, lengths, strict=True))

    def audio_of(rows: list[int]) -> EncoderOutput:
        return EncoderOutput(torch.stack([hidden[i] for i in rows]), torch.tensor([lengths[i] for i in rows]))

    steps = StepCache()

    def fixed() -> list:
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list = [None] * len(prompts)
        for first in range(0, len(order), args.width):
            rows = order[first : first + args.width]
            gens = generate_fast(model, [prompts[i] for i in rows], audio_of(rows),
                                 max_new_tokens=[caps[i] for i in rows], pad_id=199999, steps=steps,
                                 **common)  # fmt: skip
            for i, g in zip(rows, gens, strict=True):
                out[i] = g
        return out

    def continuous() -> list:
        every = list(range(len(prompts)))
        return generate_continuous(model, prompts, audio_of(every), max_new_tokens=caps, width=args.width, **common)

    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "requests": len(prompts), "width": args.width, "new_tokens": sum(caps)}  # fmt: skip
    outputs = {}
    for name, run in (("fixed", fixed), ("continuous", continuous)):
        t0 = time.perf_counter()
        run()  # warm-up: captures (and compiles) first
        _sync(device)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        outputs[name] = run()
        _sync(device)
        wall = time.perf_counter() - t0
        result[name] = {"wall_s": round(wall, 3), "tokens_per_s": round(sum(caps) / wall, 1),
                        "first_pass_s": round(warm, 2)}  # fmt: skip
    result["speedup"] = round(result["fixed"]["wall_s"] / result["continuous"]["wall_s"], 2)
    same = sum(a.tokens == b.tokens for a, b in zip(outputs["fixed"], outputs["continuous"], strict=True))
    result["same_tokens"] = f"{same}/{len(prompts)}"
    (args.out / "continuous.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
