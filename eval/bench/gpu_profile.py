"""Where a decode step, the time to first token and a whole request go: the top CUDA kernels under torch.profiler.

    python eval/bench/gpu_profile.py --out DIR            # full-size random model, bf16, one GPU
    python eval/bench/gpu_profile.py --out DIR --tiny     # tiny fp32 model on CPU (checks the script)
    python eval/bench/gpu_profile.py --out DIR --parts encoder   # only the audio tower (also: decode, ttft, request)

The model, clips and prompt are ``gpu.py``'s (30 s clips, the 100-token allowance). Parts:

- ``decode_b64``, ``decode_b1``: the CUDA-graph decode step (``DecodeStep``) over the cache of a 30 s
  clip's prompt, positioned mid-way through the 100 new tokens (every replay restarts there): wall ms
  per step over ``--steps`` replays, then the kernels of ``--profile-steps`` replays;
- ``ttft_b1``: one first-token pass at batch 1 (features, encoder, prefill, argmax read back): wall ms
  (best of ``--steps``), then its kernels, and host ms / kernel ms per stage;
- ``encoder_b64``: the audio tower over 64 clips' features (best of 3 passes), then its kernels;
- ``request_b1``: a whole batch-1 request (``gpu.py``'s, 100 new tokens; best of 3), its kernels, and the time
  no kernel ran (a request takes longer than its first token plus its steps: this says where).

Writes ``DIR/profile.json`` and ``DIR/profile.txt``: per part the wall ms, kernels launched and kernel
ms summed per pass (busy % = kernel time / wall time: far below 100 means launch- or host-bound), the
CUDA runtime calls per pass (launches, syncs, copies), the attention kernels, and the top ``--top``
kernels (name, calls, us and % of the wall time, per pass). On CPU the "kernels" are aten ops
(self CPU time), which is enough to check the script end to end.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from gpu import CLIP_S, NEW_TOKENS, _clips, _decode_step, _first_token, _our_model, _ours_request  # eval/bench/gpu.py
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

PARTS = ("decode", "ttft", "encoder", "request")
DECODE_BATCHES = (64, 1)
ENCODER_BATCH = 64
TTFT_STAGES = ("features", "encoder", "prefill")  # record_function labels in gpu._first_token
# substrings that name an attention kernel, whichever SDPA backend ran (flash, mem-efficient "fmha",
# cuDNN) or the pieces of the math fallback (softmax between two batched GEMMs)
ATTENTION_HINTS = ("flash", "fmha", "attention", "cudnn", "softmax")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wall_ms(run: Callable[[], None], device: torch.device, passes: int, best: bool) -> float:
    """Per-pass wall ms: the mean over ``passes`` back-to-back passes, or the best single pass."""
    times = []
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(passes):
        run()
        if best:
            _sync(device)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
    _sync(device)
    return 1000 * (min(times) if best else (time.perf_counter() - t0) / passes)


def _profile(run: Callable[[], None], device: torch.device, passes: int) -> profile:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(passes):
            run()
        _sync(device)
    return prof


def _kernel_times(prof: profile, device: torch.device) -> tuple[Counter, Counter]:
    """Total us and calls per kernel name (CUDA), or per aten op by self CPU time (CPU)."""
    total_us, calls = Counter(), Counter()
    if device.type == "cuda":
        for event in prof.events():
            annotation = getattr(event, "is_user_annotation", False) or event.name in TTFT_STAGES
            if event.device_type == DeviceType.CUDA and not annotation:
                total_us[event.name] += event.time_range.elapsed_us()
                calls[event.name] += 1
    else:
        for avg in prof.key_averages():
            if avg.key.startswith("aten::") and avg.self_cpu_time_total > 0:
                total_us[avg.key] += avg.self_cpu_time_total
                calls[avg.key] += avg.count
    return total_us, calls


def _gaps(prof: profile, top: int) -> dict:
    """Where no kernel ran, from the union of the kernels' time spans (kernels launched as programmatic
    dependents overlap, so wall - summed kernel time undercounts): ``span_ms`` first kernel start to last kernel
    end, ``idle_ms`` the time inside it no kernel ran, and the ``top`` pairs of kernels around the gaps (the
    kernel that ended last -> the one that started after the gap) by summed gap time."""
    spans = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                   if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
                   and e.name not in TTFT_STAGES)  # fmt: skip
    if not spans:
        return {}
    idle_us, gap_us, gap_count = 0.0, Counter(), Counter()
    reach, before = spans[0][1], spans[0][2]
    for start, end, name in spans[1:]:
        if start > reach:
            pair = f"{before[:48]} -> {name[:48]}"
            idle_us += start - reach
            gap_us[pair] += start - reach
            gap_count[pair] += 1
        if end > reach:
            reach, before = end, name
    return {"span_ms": round((reach - spans[0][0]) / 1000, 3), "idle_ms": round(idle_us / 1000, 3),
            "gaps": [{"pair": k, "count": gap_count[k], "total_us": round(v, 1)} for k, v in gap_us.most_common(top)]}


def _summary(prof: profile, device: torch.device, passes: int, wall_ms: float, top: int) -> dict:
    total_us, calls = _kernel_times(prof, device)
    wall_us = 1000 * wall_ms
    runtime = Counter()
    for avg in prof.key_averages():
        if avg.key.startswith("cuda"):  # runtime API: cudaLaunchKernel, cudaGraphLaunch, syncs, copies
            runtime[avg.key] += avg.count
    busy_us = sum(total_us.values()) / passes
    attention = {n: round(t / passes, 1) for n, t in total_us.items() if any(h in n.lower() for h in ATTENTION_HINTS)}
    return {
        "wall_ms": round(wall_ms, 3),
        "kernels_per_pass": round(sum(calls.values()) / passes, 1),
        "kernel_ms_per_pass": round(busy_us / 1000, 3),
        "busy_pct": round(100 * busy_us / wall_us, 1),
        "runtime_calls_per_pass": {k: round(n / passes, 1) for k, n in runtime.most_common(12)},
        "attention_kernels_us": attention,
        "top": [
            {"name": name, "calls": round(calls[name] / passes, 1), "total_us": round(us / passes, 1),
             "pct_of_wall": round(100 * us / passes / wall_us, 1)}
            for name, us in total_us.most_common(top)
        ],  # fmt: skip
    }


def _bytes_per_step(model, batch: int, cache_slots: int) -> dict:
    """GB a decode step must read: every decoder weight (the tied embedding once, as the LM head) and the
    whole KV buffer (the step attends over all of its slots); at 3.35 TB/s (H100 SXM) 1 GB is 0.30 ms."""
    decoder = model.decoder
    weights = sum(p.numel() * p.element_size() for p in decoder.parameters())
    cfg = decoder.config
    item = decoder.embed_tokens.weight.element_size()
    cache = 2 * cfg.num_layers * batch * cache_slots * cfg.num_kv_heads * cfg.head_dim * item
    return {"weights_gb": round(weights / 1e9, 3), "cache_gb": round(cache / 1e9, 3)}


def decode_part(model, batch: int, prompt_len: int, steps: int, profile_steps: int, top: int) -> dict:
    """One decode step at ``batch`` over a 30 s prompt's cache, mid-way through the new tokens."""
    device = model.decoder.embed_tokens.weight.device
    done = (NEW_TOKENS - steps) // 2
    step = _decode_step(model, batch, prompt_len, done)
    slot = prompt_len + done

    def rewind() -> None:  # every block starts at the same slot, so all see the same cache length
        step.slot.fill_(slot)
        step.position.fill_(slot)

    def block(n: int, launch: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n):
                launch()

        return run

    for _ in range(2):  # the first block warms up: the first replays of a fresh graph are slower
        rewind()
        wall = _wall_ms(block(steps, step), device, 1, best=False) / steps
    rewind()
    prof = _profile(block(profile_steps, step), device, 1)
    result = {"batch": batch, "slot": slot, "cache_slots": prompt_len + NEW_TOKENS}
    result |= _bytes_per_step(model, batch, prompt_len + NEW_TOKENS)
    result |= {"kernels_from": "eager step" if step.graph is None else "graph replay"}
    result |= _summary(prof, device, profile_steps, wall, top)
    if device.type == "cuda" and result["kernels_per_pass"] == 0:
        # this profiler saw no kernels inside graph replays: the eager step launches the same ones
        rewind()
        result |= _summary(_profile(block(profile_steps, step._step), device, 1), device, profile_steps, wall, top)
        result["kernels_from"] = "eager step"
    return result


def ttft_part(model, frontend, clip, passes: int, top: int) -> dict:
    """One first-token pass at batch 1: wall (best of ``passes``), kernels, and per-stage host/kernel ms."""
    device = model.decoder.embed_tokens.weight.device
    wall = _wall_ms(lambda: _first_token(model, frontend, clip), device, passes, best=True)
    prof = _profile(lambda: _first_token(model, frontend, clip), device, 1)
    # host ms: the stage's wall time on the host (the prefill's includes waiting for the argmax read back);
    # kernel ms: the kernels launched inside it
    stages = {
        event.name: {"host_ms": round(event.cpu_time_total / 1000, 3),
                     "kernel_ms": round(event.device_time_total / 1000, 3)}
        for event in prof.events() if event.name in TTFT_STAGES and event.device_type == DeviceType.CPU
    }  # fmt: skip
    return {"batch": 1, "clip_s": CLIP_S} | _summary(prof, device, 1, wall, top) | {"stages": stages}


def encoder_part(model, frontend, batch: int, passes: int, top: int) -> dict:
    """The audio tower (encoder + projector) over ``batch`` 30 s clips' features: wall ms (best of ``passes``)
    and its kernels."""
    device = model.decoder.embed_tokens.weight.device
    feats = frontend(_clips(batch))
    wall = _wall_ms(lambda: model.audio(feats.values, feats.lengths), device, passes, best=True)
    prof = _profile(lambda: model.audio(feats.values, feats.lengths), device, 1)
    return {"batch": batch, "clip_s": CLIP_S} | _summary(prof, device, 1, wall, top)


def request_part(model, frontend, clip, passes: int, top: int) -> dict:
    """A whole batch-1 request as ``gpu.py`` times it (features, audio tower, prefill, ``NEW_TOKENS`` decode steps
    with the host's stop-rule checks every few steps), its steps and graphs kept across requests: wall ms (best of
    ``passes`` after a warm-up request), its kernels, and where no kernel ran (:func:`_gaps`: launch gaps, host
    syncs, host work the GPU waits for)."""
    from speechkit.inference.audio_graphs import AudioGraphs
    from speechkit.inference.fast_generate import StepCache

    device = model.decoder.embed_tokens.weight.device
    steps, tower = StepCache(), AudioGraphs(model.audio)

    def run() -> None:
        _ours_request(model, frontend, clip, steps, tower, compile_layers=device.type == "cuda")

    run()
    wall = _wall_ms(run, device, passes, best=True)
    prof = _profile(run, device, 1)
    gaps = _gaps(prof, top) if device.type == "cuda" else {}
    return {"batch": 1, "clip_s": CLIP_S, "new_tokens": NEW_TOKENS} | _summary(prof, device, 1, wall, top) | gaps


def text_table(report: dict) -> str:
    lines = [f"{report['device']}, torch {report['torch']}, {report['dtype']}, prompt {report['prompt_len']} tokens"]
    for name, part in report["parts"].items():
        reads = f"; reads {part['weights_gb']} GB weights + {part['cache_gb']} GB cache" if "cache_gb" in part else ""
        lines += [
            "",
            f"## {name}: wall {part['wall_ms']:.3f} ms/pass, {part['kernels_per_pass']:.0f} kernels "
            f"({part.get('kernels_from', 'eager')}), kernel time {part['kernel_ms_per_pass']:.3f} ms "
            f"= {part['busy_pct']:.1f} % busy{reads}",
            "runtime calls/pass: " + ", ".join(f"{k} {v:g}" for k, v in part["runtime_calls_per_pass"].items()),
        ]
        if "idle_ms" in part:
            lines.append(f"kernels from first start to last end {part['span_ms']:.3f} ms, none running "
                         f"{part['idle_ms']:.3f} ms of it; gaps by the kernels around them:")
            lines += [f"{g['total_us']:>10.1f} us {g['count']:>5} x  {g['pair']}" for g in part["gaps"]]
        if "stages" in part:
            lines.append("stages: " + ", ".join(
                f"{k} host {v['host_ms']:.2f} / kernels {v['kernel_ms']:.2f} ms" for k, v in part["stages"].items()
            ))  # fmt: skip
        lines.append(f"{'us/pass':>10} {'% wall':>7} {'calls':>6}  kernel")
        for row in part["top"]:
            lines.append(f"{row['total_us']:>10.1f} {row['pct_of_wall']:>7.1f} {row['calls']:>6g}  {row['name'][:110]}")
    return "\n".join(lines) + "\n"


@torch.inference_mode()
def run(args: argparse.Namespace) -> dict:
    from speechkit.audio import LogMelFrontend

    model = _our_model(tiny=args.tiny)
    device = model.decoder.embed_tokens.weight.device
    frontend = LogMelFrontend(device)
    clip = _clips(1)
    prompt_len = _first_token(model, frontend, clip)  # also the warm-up of the first-token path
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(model.decoder.embed_tokens.weight.dtype).removeprefix("torch."),
        "prompt_len": prompt_len,
        "parts": {},
    }
    if "decode" in args.parts:
        for batch in DECODE_BATCHES:
            report["parts"][f"decode_b{batch}"] = decode_part(model, batch, prompt_len, args.steps,
                                                              args.profile_steps, args.top)  # fmt: skip
    if "ttft" in args.parts:
        report["parts"]["ttft_b1"] = ttft_part(model, frontend, clip, args.steps, args.top)
    if "encoder" in args.parts:
        report["parts"][f"encoder_b{ENCODER_BATCH}"] = encoder_part(model, frontend, ENCODER_BATCH, 3, args.top)
    if "request" in args.parts:
        report["parts"]["request_b1"] = request_part(model, frontend, clip, 3, args.top)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny fp32 model on CPU")
    parser.add_argument("--steps", type=int, default=20, help="decode steps timed; first-token passes (best of)")
    parser.add_argument("--profile-steps", type=int, default=5, help="decode steps under the profiler (<= --steps)")
    parser.add_argument("--top", type=int, default=30, help="kernels listed per part")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default all)")
    args = parser.parse_args()
    if not 1 <= args.profile_steps <= args.steps <= NEW_TOKENS:
        parser.error(f"need 1 <= --profile-steps <= --steps <= {NEW_TOKENS}")
    torch.backends.cuda.matmul.allow_tf32 = True  # as gpu.py
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(report, indent=1))
    table = text_table(report)
    (args.out / "profile.txt").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
