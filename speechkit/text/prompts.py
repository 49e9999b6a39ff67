"""Speech prompts in the Phi-4-multimodal chat format (reference F).

``<|user|><|audio_1|>{task prompt}<|end|><|assistant|>``: no BOS, no newlines. Each ``<|audio_N|>``
tag becomes the audio token (``<|endoftext11|>``), which is then repeated once per audio embedding
(``n_audio_tokens`` of that clip), exactly as the official processor does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from speechkit.errors import ConfigError
from speechkit.text.tokenizer import (
    ASSISTANT_TOKEN,
    AUDIO_TOKEN,
    END_TOKEN,
    SYSTEM_TOKEN,
    USER_TOKEN,
    Tokenizer,
)

AUDIO_TAG = re.compile(r"<\|audio_\d+\|>")  # the official processor ignores N: audios are used in order
COT_SEPARATOR = "<sep>"


class Task(StrEnum):
    """What the model is asked to do with the audio."""

    ASR = "asr"  # transcription
    AST = "ast"  # speech translation
    AST_COT = "ast_cot"  # transcript, <sep>, translation
    QA = "qa"  # spoken query: the audio itself is the question (empty task prompt)
    SUMMARIZE = "summarize"  # prompt wording UNCONFIRMED (the model card does not give it)


# The model card's speech languages (reference F.4): ASR and AST are trained on these.
SPEECH_LANGUAGES: dict[str, str] = {
    "en": "English", "zh": "Chinese", "de": "German", "fr": "French",
    "it": "Italian", "ja": "Japanese", "es": "Spanish", "pt": "Portuguese",
}
# Further translation targets by English name: the card's text languages plus a few common ones.
# The model reads the name in the prompt; quality for these targets is untested.
OTHER_LANGUAGES: dict[str, str] = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "nl": "Dutch", "fi": "Finnish", "he": "Hebrew",
    "hu": "Hungarian", "ko": "Korean", "no": "Norwegian", "pl": "Polish", "ru": "Russian",
    "sv": "Swedish", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "el": "Greek", "hi": "Hindi",
    "id": "Indonesian", "ro": "Romanian", "vi": "Vietnamese", "ca": "Catalan", "fa": "Persian",
}


@dataclass(frozen=True)
class Language:
    """A translation target: ISO 639-1 ``code``, English ``name`` (used in the prompt), ``speech``
    true for the 8 languages the model supports for speech."""

    code: str
    name: str
    speech: bool


def resolve_language(value: str) -> Language:
    """Language from a code or English name, case-insensitive (``fr``, ``French``, ``FRENCH``)."""
    key = value.strip().lower()
    for table, speech in ((SPEECH_LANGUAGES, True), (OTHER_LANGUAGES, False)):
        for code, name in table.items():
            if key in (code, name.lower()):
                return Language(code, name, speech)
    supported = ", ".join(f"{code} ({name})" for code, name in SPEECH_LANGUAGES.items())
    raise ConfigError(
        f"unknown language {value!r}; supported speech languages: {supported}; "
        f"other targets by code or English name: {', '.join(OTHER_LANGUAGES)}"
    )


def task_instruction(task: Task, language: Language | None = None) -> str:
    """The model card's task prompt (empty for spoken QA); AST tasks need a target ``language``."""
    needs_language = task in (Task.AST, Task.AST_COT)
    if needs_language and language is None:
        raise ConfigError(f"task {task.value!r} needs a target language (e.g. --language fr)")
    if not needs_language and language is not None:
        raise ConfigError(f"task {task.value!r} takes no target language (got {language.name!r})")
    if task is Task.ASR:
        return "Transcribe the audio clip into text."
    if task is Task.AST:
        return f"Translate the audio to {language.name}."
    if task is Task.AST_COT:
        return (
            f"Transcribe the audio to text, and then translate the audio to {language.name}. "
            f"Use {COT_SEPARATOR} as a separator between the original transcript and the translation."
        )
    if task is Task.QA:
        return ""
    return "Summarize the audio."


@dataclass(frozen=True)
class PromptSpec:
    """A speech prompt: ``task``, target ``language`` (code or name, AST tasks only), extra
    ``context`` appended after the task instruction (never replacing it), optional ``system`` turn."""

    task: Task = Task.ASR
    language: str | None = None
    context: str | None = None
    system: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "task", Task(self.task))
        except ValueError:
            tasks = ", ".join(t.value for t in Task)
            raise ConfigError(f"unknown task {self.task!r}; choose one of: {tasks}") from None
        self.instruction()  # validates the language for the task

    def instruction(self) -> str:
        """The user text after the audio tag: task prompt, then the context separated by one space."""
        language = None if self.language is None else resolve_language(self.language)
        parts = [task_instruction(self.task, language), (self.context or "").strip()]
        return " ".join(p for p in parts if p)

    def text(self) -> str:
        """The full prompt string for one audio clip, ending with ``<|assistant|>``."""
        system = "" if self.system is None else f"{SYSTEM_TOKEN}{self.system}{END_TOKEN}"
        return f"{system}{USER_TOKEN}<|audio_1|>{self.instruction()}{END_TOKEN}{ASSISTANT_TOKEN}"


def encode_prompt(tokenizer: Tokenizer, text: str, n_audio_tokens: int | Sequence[int]) -> list[int]:
    """Token ids of ``text`` with each audio tag expanded to the audio token times its clip's count.

    ``n_audio_tokens``: encoder tokens per clip (one int, or one per ``<|audio_N|>`` in text order).
    """
    counts = [n_audio_tokens] if isinstance(n_audio_tokens, int) else list(n_audio_tokens)
    ids = tokenizer.encode(AUDIO_TAG.sub(AUDIO_TOKEN, text))
    audio = tokenizer.special.audio
    n_tags = ids.count(audio)
    if n_tags != len(counts):
        raise ConfigError(
            f"the prompt has {n_tags} audio placeholder(s) but {len(counts)} audio clip(s) were given"
        )
    if any(c < 1 for c in counts):
        raise ConfigError(f"each audio clip needs at least one audio token, got {counts}")
    out: list[int] = []
    clips = iter(counts)
    for token in ids:
        out.extend([audio] * next(clips) if token == audio else [token])
    return out


@dataclass(frozen=True)
class CotSplit:
    """An AST chain-of-thought output split at ``<sep>``; ``translation`` is None when the model
    emitted no separator (then ``transcript`` holds the whole output)."""

    transcript: str
    translation: str | None


def split_cot(text: str) -> CotSplit:
    """Split decoded AST-CoT output into transcript and translation at the first ``<sep>``."""
    if COT_SEPARATOR not in text:
        return CotSplit(text.strip(), None)
    transcript, translation = text.split(COT_SEPARATOR, 1)
    return CotSplit(transcript.strip(), translation.strip())
