"""A deterministic stand-in recognizer for runner tests. It is NOT a model: it reads the references.

``test:echo`` returns each utterance's reference (transcript or translation) with a deterministic
corruption for every third utterance, so scores are non-trivial but reproducible. The environment
variable ``SPEECHKIT_TEST_DECODE_DELAY`` (seconds per batch) slows it down so tests can kill a run
mid-way.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any

from speechkit.errors import SpeechkitError
from speechkit.evaluation.recognizer import Hypothesis, Sample, Task


def _corrupt(text: str, key: str) -> str:
    if zlib.crc32(key.encode()) % 3:
        return text
    words = text.split()
    return " ".join(words[:-1]) if len(words) > 1 else text + " extra"


class EchoRecognizer:
    """Echoes references (see module docstring); counts calls so tests can check warm-up."""

    name = "test-echo"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0

    def metadata(self) -> dict[str, Any]:
        return {"model": self.name, "device": "cpu", "note": "test helper that echoes references"}

    def decode(self, batch: list[Sample], task: Task) -> list[Hypothesis]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for sample in batch:
            utt = sample.utterance
            if task.kind == "asr":
                out.append(Hypothesis(_corrupt(utt.text, utt.id)))
            else:
                transcript = utt.text if task.kind == "ast_cot" else None
                out.append(Hypothesis(_corrupt(utt.translation or "", utt.id), transcript))
        return out


def make_test_recognizer(name: str) -> EchoRecognizer:
    """``echo`` -> :class:`EchoRecognizer` (delay from ``SPEECHKIT_TEST_DECODE_DELAY``)."""
    if name != "echo":
        raise SpeechkitError(f"unknown test recognizer {name!r}; the only one is test:echo")
    return EchoRecognizer(float(os.environ.get("SPEECHKIT_TEST_DECODE_DELAY", "0")))
