"""Build the demo corpus: manifests per split, licence notices and the demo tokenizer.

    python3 recipes/synthetic_demo/prepare.py --out data/synthetic_demo/prepared

Needs a Debian machine with network once (``apt-get update`` first); the downloaded packages are cached.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechkit.errors import SpeechkitError
from speechkit.training.data.recipe import load_recipe_config, prepare_recipe

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "config.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/synthetic_demo/prepared"))
    parser.add_argument("--cache", type=Path, default=Path("data/synthetic_demo/cache"),
                        help="downloaded and unpacked Debian packages")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="processes reading the help pages")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        prepare_recipe(load_recipe_config(args.config), args.out, args.cache, args.workers)
    except SpeechkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
