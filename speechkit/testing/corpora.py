"""Tiny corpora in each published layout, for reader and runner tests.

Every writer takes a destination folder and rows, writes the exact layout its reader expects and
returns the folder the reader takes. Each clip speaks its row's text with espeak-ng (installed by
``make install``); where espeak-ng is absent, or a row has no text, the clip is a 0.3 s tone with a
pitch per row, so the layouts stay testable anywhere.
"""

from __future__ import annotations

import functools
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speechkit.audio import SAMPLE_RATE
from speechkit.testing.audio import sine

CLIP_S = 0.3


_VOICES = {"en": "en-us", "de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt-br", "ja": "ja", "zh": "cmn"}


def has_speech_synthesis() -> bool:
    return shutil.which("espeak-ng") is not None


def clip(index: int, text: str, lang: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Row ``index``'s audio: ``text`` spoken by espeak-ng in ``lang`` (``de``, ``de_de``...), else a tone."""
    if not text.strip() or not has_speech_synthesis():
        return sine(CLIP_S, 220.0 + 40.0 * index, sample_rate)
    return speak(text, _VOICES.get(lang[:2].lower(), "en-us"), sample_rate)


def speak(text: str, voice: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``text`` spoken by espeak-ng's ``voice`` (``de``, ``en-us+f3``, ``fr+klatt``...), peak about 0.5-0.9.

    Needs espeak-ng (see :func:`has_speech_synthesis`); an unknown voice raises CalledProcessError.
    """
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return (0.9 * soxr.resample(samples, rate, sample_rate)).astype(np.float32)


# Sentences for ``talk``: plain English, so that espeak-ng's timing is stable across its versions.
_TALK = (
    "The meeting starts at nine with a short review of last week.",
    "Then every team reports on its progress and its open questions.",
    "We still need a date for the next release and a plan for testing.",
    "Please send your notes to the group before the end of the day.",
    "The new office will open in spring, close to the central station.",
    "Lunch is served at noon in the main hall on the ground floor.",
    "After the break we look at the budget for the coming year.",
    "Thank you all for coming, and see you again next week.",
)


@functools.cache
def _sentence(index: int) -> np.ndarray:
    return speak(_TALK[index % len(_TALK)], "en-us")


def talk(duration_s: float, seed: int = 0) -> np.ndarray:
    """``duration_s`` seconds of continuous espeak-ng speech at ``SAMPLE_RATE``: English sentences
    from sentence ``seed`` on, joined with their own short pauses (under 0.3 s) and cut at the end.

    For tests of the speech detector, which (rightly) ignores ``speechlike``; the speech starts
    within 20 ms of the first sample. Needs espeak-ng (see :func:`has_speech_synthesis`).
    """
    n = round(duration_s * SAMPLE_RATE)
    parts, total, index = [], 0, seed
    while total < n:
        x = _sentence(index)
        above = np.flatnonzero(np.abs(x) > 0.01)
        x = x[above[0] : above[-1] + 1 + round(0.2 * SAMPLE_RATE)]  # own lead-in dropped, 0.2 s pause kept
        parts.append(x)
        total += len(x)
        index += 1
    return np.concatenate(parts)[:n].astype(np.float32)


def _wav_bytes(index: int, text: str, lang: str) -> tuple[bytes, int]:
    """WAV bytes at 16 kHz and their sample count."""
    samples = clip(index, text, lang)
    buf = io.BytesIO()
    sf.write(buf, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue(), len(samples)


def write_commonvoice(root: Path, locale: str, rows: Sequence[tuple[str, str]], split: str = "test") -> Path:
    """``cv-corpus-15.0-2023-09-08/<locale>/{clips/*.mp3, <split>.tsv}``; rows are (clip, sentence)."""
    release = Path(root) / "cv-corpus-15.0-2023-09-08"
    clips = release / locale / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    header = "client_id path sentence up_votes down_votes age gender accents variant locale segment"
    lines = [header.replace(" ", "\t")]
    for i, (name, sentence) in enumerate(rows):
        sf.write(clips / name, clip(i, sentence, locale, 48000), 48000, format="MP3")
        lines.append(f"c{i}\t{name}\t{sentence}\t2\t0\t\t\t\t\t{locale}\t")
    (release / locale / f"{split}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    return release


def write_fleurs(root: Path, lang_code: str, rows: Sequence[tuple[int, str, str]],
                 split: str = "test") -> Path:  # fmt: skip
    """``data/<lang_code>/{<split>.tsv, audio/<split>.tar.gz}``; rows are (sentence id, file, raw text).

    Give two rows the same sentence id to model two speakers reading one sentence.
    """
    folder = Path(root) / "data" / lang_code
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    with tarfile.open(folder / "audio" / f"{split}.tar.gz", "w:gz") as tar:
        for i, (sentence_id, file_name, raw) in enumerate(rows):
            data, n_samples = _wav_bytes(i, raw, lang_code)
            info = tarfile.TarInfo(f"{split}/{file_name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            fields = [str(sentence_id), file_name, raw, raw.lower(), "|".join(raw), str(n_samples), "MALE"]
            lines.append("\t".join(fields))
    (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    return Path(root)


def write_covost(root: Path, src: str, tgt: str, rows: Sequence[tuple[str, str, str]],
                 split: str = "test") -> tuple[Path, Path]:  # fmt: skip
    """``covost_v2.<src>_<tgt>.<split>.tsv`` and ``<src>/clips/``; rows are (clip, sentence, translation).

    Returns ``(tsv_dir, clips_dir)``.
    """
    root = Path(root)
    clips = root / src / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    lines = ["path\tsentence\ttranslation\tclient_id"]
    for i, (name, sentence, translation) in enumerate(rows):
        sf.write(clips / name, clip(i, sentence, src, 48000), 48000, format="MP3")
        lines.append(f"{name}\t{sentence}\t{translation}\tspk{i}")
    (root / f"covost_v2.{src}_{tgt}.{split}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    return root, clips


def write_openasr_parquet(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    """One parquet shard in the hub's layout (``id``, ``audio`` {bytes, path}, ``text``); rows (id, text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "id": [r[0] for r in rows],
        "audio": [{"bytes": _wav_bytes(i, r[1], "en")[0], "path": f"{r[0]}.wav"} for i, r in enumerate(rows)],
        "text": [r[1] for r in rows],
    })  # fmt: skip
    pq.write_table(table, path)
    return path


def write_manifest(path: Path, rows: Sequence[dict]) -> Path:
    """A JSONL manifest; each row's ``audio_filepath`` (relative) gets its clip written next to the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        audio = clip(i, row.get("text") or "", row.get("src_lang") or "en")
        sf.write(path.parent / row["audio_filepath"], audio, SAMPLE_RATE)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write_fixture_suite(root: Path) -> tuple[Path, Path, dict[str, list[str]]]:
    """A data root with every layout and a suite JSON over it, for runner tests.

    Returns ``(data_root, suite_json, expected ids per set)``.
    """
    data = Path(root) / "data"
    write_commonvoice(data / "commonvoice", "en", [(f"en{i}.mp3", s) for i, s in enumerate(
        ["Hello there.", "It costs $20.", "Mr. Smith's car", "Twenty one pilots"])])  # fmt: skip
    fleurs_de = [(1, "a.wav", "Guten Morgen."), (1, "b.wav", "Guten Morgen."), (2, "c.wav", "Danke schön.")]
    write_fleurs(data / "fleurs", "de_de", fleurs_de)
    write_fleurs(
        data / "fleurs", "en_us", [(1, "x.wav", "Good morning."), (2, "y.wav", "Thank you very much.")]
    )
    write_covost(data / "covost2", "de", "en", [("d1.mp3", "Ja, bitte.", "Yes, please."),
                                                ("d2.mp3", "Wie geht es dir?", "How are you?")])  # fmt: skip
    write_openasr_parquet(data / "openasr/librispeech/test.clean/shard-0.parquet",
                          [("ls-1", "he was here"), ("ls-2", "she was not"), ("ls-3", "")])  # fmt: skip
    sets = [
        {"name": "cv-en", "reader": "commonvoice", "args": {"locale": "en"}, "task": "asr", "src_lang": "en",
         "paper": 7.61},
        {"name": "fleurs-de", "reader": "fleurs", "args": {"lang_code": "de_de"}, "task": "asr",
         "src_lang": "de", "paper": 3.96},
        {"name": "fleurs-de-en-cot", "reader": "fleurs",
         "args": {"lang_code": "de_de", "translate_to": "en_us"}, "task": "ast_cot", "src_lang": "de",
         "tgt_lang": "en", "paper": 39.43},
        {"name": "covost2-de-en", "reader": "covost", "args": {"src": "de", "tgt": "en"}, "task": "ast",
         "src_lang": "de", "tgt_lang": "en", "paper": 39.81},
        {"name": "openasr-ls-clean", "reader": "openasr", "args": {"path": "librispeech/test.clean"},
         "task": "asr", "src_lang": "en", "protocol": "openasr"},
    ]  # fmt: skip
    suite = Path(root) / "fixture-suite.json"
    suite.write_text(json.dumps({"name": "fixture", "description": "test corpora", "sets": sets}), "utf-8")
    fleurs_ids = [f"de_de/{r[1]}" for r in fleurs_de]
    expected = {"cv-en": [f"en{i}.mp3" for i in range(4)], "fleurs-de": fleurs_ids,
                "fleurs-de-en-cot": fleurs_ids, "covost2-de-en": ["d1.mp3", "d2.mp3"],
                "openasr-ls-clean": ["ls-1", "ls-2", "ls-3"]}  # fmt: skip
    return data, suite, expected
