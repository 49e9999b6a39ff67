"""Latency of the streaming policy on a file: thin wrapper over ``speechkit stream --simulate --json``.

    python streaming/latency.py FILE --model DIR [--realtime] [stream flags...]
"""

import sys

from speechkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["stream", "--simulate", "--json", *sys.argv[1:]]))
