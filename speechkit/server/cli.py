"""``speechkit serve``: the streaming and HTTP server in one process (the ``serve`` extra)."""

from __future__ import annotations

import argparse
import sys

from speechkit.errors import ConfigError
from speechkit.streaming.cli import USAGE_ERROR, add_model_options, add_stream_options, stream_options


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "serve WebSocket streaming, OpenAI-compatible transcription, a browser page, health and metrics"
    p = subparsers.add_parser("serve", help=help_text, description=help_text)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or api_key in start)")
    p.add_argument("--max-streams", type=int, default=32)
    p.add_argument("--max-upload-mb", type=float, default=25.0)
    p.add_argument("--idle-timeout", type=float, default=30.0, help="seconds without a message that end a stream")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (dynamic batching)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens per decode at most (default: scaled to the audio's duration)")  # fmt: skip
    add_model_options(p)
    add_stream_options(p)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from speechkit.inference.pipeline import DecodeOptions, Pipeline

    try:
        import uvicorn

        from speechkit.server.app import ServerOptions, create_app
    except ImportError as err:
        raise ConfigError(f"speechkit serve needs the serve extra: pip install 'speechkit[serve]' ({err})") from None
    try:
        options = ServerOptions(args.api_key, args.max_streams, args.max_upload_mb, args.idle_timeout,
                                args.max_batch, model_name=str(args.model), stream=stream_options(args))  # fmt: skip
        decode = DecodeOptions(batch_size=args.max_batch, max_new_tokens=args.max_new_tokens)
    except ConfigError as err:
        print(f"speechkit serve: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    from speechkit.streaming.step import PipelineStep

    pipeline = Pipeline.load(args.model, device=args.device, dtype=args.dtype)
    pipeline.warm_up(args.max_batch)  # on a GPU: compile and capture before the first stream, not during it
    step = PipelineStep(pipeline, decode)
    uvicorn.run(create_app(step, options), host=args.host, port=args.port, log_level="info", ws="websockets")
    return 0
