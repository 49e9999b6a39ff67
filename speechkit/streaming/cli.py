"""``speechkit stream``: replay a file as a stream (``--simulate``) or transcribe the microphone (``--mic``).

The flags mirror :class:`~speechkit.streaming.records.StreamOptions`. ``--simulate`` prints the latency
summary (``--json``: one JSON object with the summary, the final segments and per-unit emission times).
"""

from __future__ import annotations

import argparse
import json
import sys

from speechkit.errors import ConfigError
from speechkit.model.hub import RELEASED_MODEL

USAGE_ERROR = 2
MIC_BLOCK_S = 0.1  # seconds per microphone callback block


def add_stream_options(p: argparse.ArgumentParser) -> None:
    """The StreamOptions flags (shared with ``speechkit serve`` defaults)."""
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate", "both"])
    p.add_argument("--target", default=None, help="translation target language (translate/both)")
    p.add_argument("--cot", action="store_true", help="translate through the chain-of-thought prompt")
    p.add_argument("--language", default=None, help="source language hint; ja/zh are committed per character")
    p.add_argument("--agreement", type=int, default=2, help="n of LocalAgreement-n")
    p.add_argument("--min-chunk", type=float, default=1.0, help="seconds of new audio per re-decode")
    p.add_argument("--pause", type=float, default=0.5, help="seconds of silence that finalize a segment")
    p.add_argument("--max-segment", type=float, default=15.0, help="seconds after which a segment is forced")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Where the model comes from."""
    p.add_argument("--model", default=RELEASED_MODEL, help=f"hub id or checkpoint directory (default {RELEASED_MODEL})")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])


def stream_options(args: argparse.Namespace):
    """StreamOptions from the parsed flags (ConfigError on bad values)."""
    from speechkit.streaming.records import StreamOptions

    return StreamOptions(args.task, args.target, args.cot, args.language, args.agreement, args.min_chunk,
                         args.pause, args.max_segment)  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "stream a file (--simulate, with latency metrics) or the microphone (--mic)"
    p = subparsers.add_parser("stream", help=help_text, description=help_text)
    p.add_argument("file", nargs="?", metavar="FILE", help="audio file to replay (with --simulate)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--simulate", action="store_true", help="replay FILE as a stream and measure latency")
    source.add_argument("--mic", action="store_true", help="stream the default microphone (sounddevice extra)")
    clock = p.add_mutually_exclusive_group()
    clock.add_argument("--realtime", action="store_true", help="compute-aware clock: model time delays output")
    clock.add_argument("--compute-unaware", action="store_true", help="audio-time clock (default; deterministic)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_stream_options(p)
    add_model_options(p)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if args.simulate and args.file is None:
        print("speechkit stream: error: --simulate needs a FILE", file=sys.stderr)
        return USAGE_ERROR
    if args.mic and args.file is not None:
        print("speechkit stream: error: --mic takes no FILE", file=sys.stderr)
        return USAGE_ERROR
    try:
        options = stream_options(args)
    except ConfigError as err:
        print(f"speechkit stream: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    if args.mic:
        sounddevice = _import_sounddevice()  # fail before loading the model
    from speechkit.inference.pipeline import Pipeline
    from speechkit.streaming.detector import VadDetector
    from speechkit.streaming.step import PipelineStep

    step = PipelineStep(Pipeline.load(args.model, device=args.device, dtype=args.dtype))
    if args.mic:
        return _mic(sounddevice, step, options, VadDetector())
    return _simulate(args, step, options, VadDetector())


def _simulate(args, step, options, detector) -> int:
    from speechkit.audio import load_audio
    from speechkit.streaming.simulate import simulate

    wave = load_audio(args.file, keep_8k=False)  # the stream is 16 kHz throughout
    report = simulate(wave.samples, step, options, detector, realtime=args.realtime)
    if args.json:
        record = {
            "summary": report.summary(),
            "segments": [
                {"id": s.id, "start": s.start, "end": s.end, "text": s.text, "translation": s.translation,
                 "forced": s.forced} for s in report.segments
            ],
            "emissions": [{"text": e.text, "time": round(e.time, 3), "segment_id": e.segment_id}
                          for e in report.emissions],
            "offline": report.offline,
        }  # fmt: skip
        print(json.dumps(record, ensure_ascii=False))
        return 0
    for s in report.segments:
        line = f"[{s.start:7.2f} -> {s.end:7.2f}] {s.text}"
        print(line + (f"  |  {s.translation}" if s.translation and s.translation != s.text else ""))
    for key, value in report.summary().items():
        print(f"{key}: {value}", file=sys.stderr)
    return 0


def _import_sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as err:  # OSError: the wheel is there but PortAudio is not
        raise ConfigError(f"--mic needs sounddevice and PortAudio: pip install 'speechkit[mic]' ({err})") from None
    return sounddevice


def _mic(sounddevice, step, options, detector) -> int:
    import queue

    import numpy as np

    from speechkit.audio import SAMPLE_RATE
    from speechkit.streaming.engine import StreamingEngine

    engine = StreamingEngine(step, options, detector)
    blocks: queue.Queue = queue.Queue()
    with sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                                 blocksize=round(MIC_BLOCK_S * SAMPLE_RATE),
                                 callback=lambda data, frames, t, status: blocks.put(data[:, 0].copy())):  # fmt: skip
        print("listening; Ctrl-C to stop", file=sys.stderr)
        try:
            while True:
                engine.insert_audio(np.asarray(blocks.get(), dtype=np.float32))
                _show(engine.process())
        except KeyboardInterrupt:
            _show(engine.finish())
    return 0


def _show(update) -> None:
    for segment in update.finals:
        tail = f"  |  {segment.translation}" if segment.translation and segment.translation != segment.text else ""
        print(f"\r\033[K{segment.text}{tail}", flush=True)
    if update.partial is not None:
        print(f"\r\033[K{update.partial.text}", end="", flush=True)
