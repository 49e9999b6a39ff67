"""Synthesize prepared manifests with espeak-ng: 16 kHz FLAC (or WAV) plus manifests with durations.

    python3 recipes/synthetic_demo/synthesize.py --prepared data/synthetic_demo/prepared \
        --out data/synthetic_demo/audio --espeak espeak-bundle --workers 16

Resumable: rerun the same command after a kill and only the missing files are made.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from speechkit.errors import SpeechkitError
from speechkit.training.data.recipe import synthesize_splits
from speechkit.training.data.split import SPLITS
from speechkit.training.data.synthesize import AUDIO_FORMATS, Espeak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/synthetic_demo/prepared"))
    parser.add_argument("--out", type=Path, default=Path("data/synthetic_demo/audio"))
    parser.add_argument("--espeak", default=None,
                        help="bundle folder from bundle_espeak.sh, or an espeak-ng executable (default: PATH)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--format", default="flac", choices=sorted(AUDIO_FORMATS),
                        help="wav: twice the disk, ~17x faster to read back (the GPU run decodes it all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        synthesize_splits(args.prepared, args.out, Espeak.find(args.espeak), args.workers, tuple(args.splits),
                          args.format)
    except SpeechkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
