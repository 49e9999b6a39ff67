"""Add espeak-ng's IPA of each utterance (``phonemes``) to the prepared manifests, in place, for
``train.ctc_units: phonemes``. Run after prepare, with the espeak-ng bundle the GPU run synthesizes with.

    python3 recipes/synthetic_demo/phonemize.py --prepared data/synthetic_demo/prepared \
        --espeak espeak-bundle --workers 2

Rows whose phonemes espeak-ng cannot give are logged and keep an empty string.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from speechkit.errors import SpeechkitError
from speechkit.training.data.split import SPLITS
from speechkit.training.data.synthesize import Espeak, phonemize_manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/synthetic_demo/prepared"))
    parser.add_argument("--espeak", default=None,
                        help="bundle folder from bundle_espeak.sh, or an espeak-ng executable (default: PATH)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        espeak = Espeak.find(args.espeak)
        for split in SPLITS:
            failed = phonemize_manifest(args.prepared / f"{split}.jsonl", espeak, args.workers)
            logging.info("%s: phonemes added (%d rows failed)", split, failed)
    except SpeechkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
