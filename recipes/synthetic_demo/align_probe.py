"""Does the decoder learn to read the audio? Trains ASR on cached encoder outputs of a trained demo model.

    python3 recipes/synthetic_demo/align_probe.py --model RUN/model --audio AUDIO --name A \
        [--fresh-projector] [--freeze-decoder] [--lr 1e-3] [--batch 64] [--short-first 0.4] [--seconds 150]

The encoder of ``--model`` (an exported demo checkpoint) is frozen and run once over ``--n`` random
train utterances of ``--audio``; then the projector (and the decoder, unless ``--freeze-decoder``)
train on the ASR task alone for ``--seconds`` of steps, in bf16 autocast on the GPU. Prints the train
loss every 100 steps and the dev ASR WER/CER per language (24 dev utterances each, greedy) every
``--every`` steps. Several variants fit on one GPU side by side (session 3 ran five in one 5-minute
device call: recipes/synthetic_demo/RESULTS.md). ``--short-first F`` trains on clips of at most 3.5 s
for the first fraction F of the time.
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from speechkit.audio import LogMelFrontend, load_audio
from speechkit.inference.pipeline import resolve_device
from speechkit.model.encoder import EncoderOutput
from speechkit.model.loader import load_speech_model
from speechkit.text.prompts import PromptSpec, Task, encode_prompt
from speechkit.training.batches import IGNORE, plan_batches, read_rows
from speechkit.training.evaluate import dev_subset, evaluate_dev

SHORT_S = 3.5


@torch.no_grad()
def encode_all(model, frontend: LogMelFrontend, rows, seconds: float = 200.0) -> list[torch.Tensor]:
    """Encoder outputs (T'_i, encoder_dim) of every row, kept on the model's device. Batches of at most
    ``seconds`` of padded audio are formed in duration order (little padding; 64 clips a batch put two of
    five side-by-side probes out of GPU memory on the longest clips), the outputs returned in row order."""
    with ThreadPoolExecutor(8) as pool:
        waves = list(pool.map(lambda r: load_audio(r.audio), rows))
    chunks = sorted(plan_batches([r.duration for r in rows], seconds, 0, 0), key=lambda b: rows[b[0]].duration)
    out: list[torch.Tensor | None] = [None] * len(rows)
    for chunk in chunks:
        feats = frontend([waves[i].samples for i in chunk], [waves[i].sample_rate for i in chunk])
        encoded = model.audio.encoder(feats.values, feats.lengths)
        for j, (i, n) in enumerate(zip(chunk, encoded.lengths.tolist(), strict=True)):
            out[i] = encoded.hidden[j, :n].clone()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported demo model folder (official layout)")
    parser.add_argument("--audio", required=True, help="synthesized audio folder (train.jsonl, dev.jsonl)")
    parser.add_argument("--name", default="probe")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=64, help="utterances per step")
    parser.add_argument("--fresh-projector", action="store_true", help="re-initialise the projector, N(0, 0.02)")
    parser.add_argument("--freeze-decoder", action="store_true", help="train the projector only")
    parser.add_argument("--short-first", type=float, default=0.0)
    parser.add_argument("--embed-ctc", type=float, default=0.0,
                        help="weight of a CTC loss on the projector output scored against the (fixed) token "
                             "embeddings, blank = <|endoftext|>: the audio slots learn to look like the tokens")
    parser.add_argument("--seconds", type=float, default=150.0, help="seconds of training steps")
    parser.add_argument("--n", type=int, default=12000, help="train utterances (random, seed 0)")
    parser.add_argument("--every", type=int, default=600)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = resolve_device(args.device)
    loaded = load_speech_model(args.model, dtype=torch.float32, lora="unmerged", device=device)
    model, tokenizer = loaded.model, loaded.tokenizer
    model.decoder.set_lora_enabled(False)
    rows = read_rows(f"{args.audio}/train.jsonl", True)
    rows = random.Random(0).sample(rows, min(args.n, len(rows)))
    dev = dev_subset(read_rows(f"{args.audio}/dev.jsonl", True), 24)
    start = time.perf_counter()
    hidden = encode_all(model, LogMelFrontend(device), rows)
    print(f"{args.name}: {len(hidden)} utterances encoded in {time.perf_counter() - start:.0f} s", flush=True)
    projector = model.audio.projector
    if args.fresh_projector:
        with torch.no_grad():
            for layer in projector.modules():
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.normal_(0.0, 0.02)
                    layer.bias.zero_()
    trained = list(projector.parameters()) + ([] if args.freeze_decoder else list(model.decoder.parameters()))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    embed_scale = torch.nn.Parameter(torch.tensor(2.3, device=device))  # log of the logit scale
    if args.embed_ctc:
        trained.append(embed_scale)
    optimizer = torch.optim.AdamW(trained, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01,
                                  fused=device.type == "cuda")  # fmt: skip
    prompt_text = PromptSpec(Task.ASR).text()
    pad = tokenizer.special.endoftext
    sequences, token_ids = [], []
    for h, row in zip(hidden, rows, strict=True):
        token_ids.append(tokenizer.encode(row.text))
        prompt = encode_prompt(tokenizer, prompt_text, h.shape[0])
        answer = tokenizer.encode(row.text) + [tokenizer.special.end]
        sequences.append((prompt + answer, [IGNORE] * (len(prompt) - 1) + answer + [IGNORE]))

    def loss_of(batch: list[int]) -> torch.Tensor:
        width = max(len(sequences[i][0]) for i in batch)
        ids = torch.tensor([sequences[i][0] + [pad] * (width - len(sequences[i][0])) for i in batch], device=device)
        labels = torch.tensor([sequences[i][1] + [IGNORE] * (width - len(sequences[i][1])) for i in batch],
                              device=device)  # fmt: skip
        states = torch.nn.utils.rnn.pad_sequence([hidden[i] for i in batch], batch_first=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            lengths = torch.tensor([hidden[i].shape[0] for i in batch])
            audio = EncoderOutput(projector(states), lengths)
            embeds = model.embed_inputs(ids, audio)
            positions = torch.arange(embeds.shape[1], device=device).expand(embeds.shape[0], -1)
            logits = model.decoder.logits(model.decoder(embeds, positions))
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        if args.embed_ctc:
            table = model.decoder.embed_tokens.weight.detach().float()
            frames = (audio.hidden.float() @ table.T) * embed_scale.exp()
            targets = [token_ids[i] for i in batch]
            ctc = F.ctc_loss(frames.log_softmax(-1).transpose(0, 1), torch.tensor([t for ts in targets for t in ts]),
                             lengths, torch.tensor([len(t) for t in targets]), blank=pad, zero_infinity=True)
            loss = loss + args.embed_ctc * ctc
        return loss

    def plan(max_s: float) -> list[list[int]]:
        chosen = sorted((i for i, r in enumerate(rows) if r.duration <= max_s), key=lambda i: rows[i].duration)
        batches = [chosen[i : i + args.batch] for i in range(0, len(chosen), args.batch)]
        random.Random(len(batches)).shuffle(batches)
        return batches

    def dev_scores() -> dict:
        scores = evaluate_dev(model, tokenizer, dev, (Task.ASR,))["asr"]
        model.train()
        return scores

    step, elapsed = 0, 0.0
    while elapsed < args.seconds:
        short = elapsed < args.short_first * args.seconds
        for batch in plan(SHORT_S if short else float("inf")):
            tick = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = args.lr * min(1.0, (step + 1) / 100)
            loss = loss_of(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            step += 1
            value = float(loss.detach())
            elapsed += time.perf_counter() - tick
            if step % 100 == 0:
                print(f"{args.name} step {step} loss {value:.3f} t {elapsed:.1f}", flush=True)
            if step % args.every == 0:
                print(f"{args.name} step {step} dev {dev_scores()}", flush=True)
            if elapsed >= args.seconds or (short and elapsed >= args.short_first * args.seconds):
                break
    print(f"{args.name} final step {step} dev {dev_scores()}", flush=True)


if __name__ == "__main__":
    main()
