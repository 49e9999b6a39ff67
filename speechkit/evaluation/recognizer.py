"""The interface the runner drives: :class:`Recognizer`. ``--model`` is resolved by :func:`load_recognizer`
(the speech model is imported only when a checkpoint is asked for, so scoring stays model-free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from speechkit.audio import Waveform
from speechkit.data import Utterance
from speechkit.errors import SpeechkitError

TASK_KINDS = ("asr", "ast", "ast_cot")


@dataclass(frozen=True)
class Task:
    """What to produce: ``asr`` (transcript), ``ast`` (translation) or ``ast_cot`` (transcript, then
    translation). ``src_lang`` is informational (prompts are language-agnostic for ASR)."""

    kind: str
    src_lang: str | None = None
    tgt_lang: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise SpeechkitError(f"unknown task {self.kind!r}; choose one of: {', '.join(TASK_KINDS)}")
        if self.kind != "asr" and not self.tgt_lang:
            raise SpeechkitError(f"task {self.kind!r} needs a target language")


@dataclass(frozen=True)
class Sample:
    """An utterance with its decoded audio (loaded before timing starts, so I/O is not timed)."""

    utterance: Utterance
    waveform: Waveform


@dataclass(frozen=True)
class Hypothesis:
    """Raw model output for one sample: ``text`` is the task's output (transcript for asr, translation
    for ast/ast_cot); ``transcript`` is the chain-of-thought transcript of ``ast_cot``."""

    text: str
    transcript: str | None = None


@runtime_checkable
class Recognizer(Protocol):
    """A speech model as the evaluation runner sees it."""

    name: str

    def metadata(self) -> dict[str, Any]:
        """Run metadata for the records sidecar: checkpoint, dtype, device name, prompt, decoding options."""
        ...

    def decode(self, batch: list[Sample], task: Task) -> list[Hypothesis]:
        """One hypothesis per sample, in order. Called with the same batch once for warm-up."""
        ...


def load_recognizer(spec: str, batch_size: int = 8, beam_size: int = 1) -> Recognizer:
    """Resolve ``--model``: ``test:<name>`` gives a :mod:`speechkit.testing` recognizer; anything else is
    a checkpoint (hub id, directory) loaded as a :class:`~speechkit.inference.pipeline.Pipeline` that decodes
    ``batch_size`` rows at a time (a larger runner batch is one continuous-batching group), with
    ``beam_size`` hypotheses per utterance."""
    if spec.startswith("test:"):
        from speechkit.testing.recognizer import make_test_recognizer

        return make_test_recognizer(spec.removeprefix("test:"))
    from speechkit.evaluation.model_recognizer import load_model_recognizer

    return load_model_recognizer(spec, batch_size=batch_size, beam_size=beam_size)
