"""Synthesize a prepared manifest with espeak-ng in parallel worker processes, as 16 kHz mono FLAC or WAV.

One ``espeak-ng`` process per utterance (start-up is about 20 ms against 20-30 ms of synthesis, and a
crash or hang then costs one utterance, not a worker). Its 22.05 kHz WAV is resampled with soxr and
scaled by 0.9 (espeak output is near full scale and would clip after resampling). A failed utterance
is logged and left out of the output manifest; the run goes on. Files are written to a temporary name
and renamed, so an existing file is complete and a rerun skips it (resume after a kill).

espeak-ng is either a command on PATH or a folder made by ``recipes/synthetic_demo/bundle_espeak.sh``
(binary, libraries and voice data unpacked from Debian's .deb files), which runs where espeak-ng is
not installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speechkit.audio.io import SAMPLE_RATE
from speechkit.errors import ConfigError, DataError
from speechkit.training.data.prepare import write_manifest

log = logging.getLogger(__name__)
# FLAC keeps a corpus small; WAV costs twice the disk and nothing to read back: a training run that decodes
# its 107 h into memory spent 27 s on FLAC (run 12), and FLAC decodes at ~2,300x real time per core, WAV
# at ~40,000x (this box, 400 clips)
AUDIO_FORMATS = {"flac": "FLAC", "wav": "WAV"}
GAIN = 0.9
TIMEOUT_S = 60.0  # a sentence takes well under a second; anything this slow is hung
LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9-]+)?\)")  # "(en)" where a French voice reads English


@dataclass(frozen=True)
class Espeak:
    """How to run espeak-ng: the executable and the extra environment (empty for a system install)."""

    executable: str
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def find(cls, where: str | Path | None = None) -> Espeak:
        """``where``: a bundle folder, an executable path or name; None looks for ``espeak-ng`` on PATH."""
        if where is not None and Path(where).is_dir():
            folder = Path(where).resolve()
            binary = folder / "bin" / "espeak-ng"
            if not binary.is_file():
                raise ConfigError(f"{folder}: not an espeak-ng bundle (no bin/espeak-ng); run bundle_espeak.sh")
            lib = str(folder / "lib")
            old = os.environ.get("LD_LIBRARY_PATH")
            return cls(str(binary), (("LD_LIBRARY_PATH", f"{lib}:{old}" if old else lib),
                                     ("ESPEAK_DATA_PATH", str(folder))))  # fmt: skip
        found = shutil.which(str(where or "espeak-ng"))
        if found is None:
            raise ConfigError(f"espeak-ng not found ({where or 'PATH'}); install it or pass a bundle folder")
        return cls(found)

    def wav(self, text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
        """Synthesize ``text``; returns (float32 samples in [-1, 1], sample rate). RuntimeError on failure."""
        cmd = ["--stdout", "-b", "1", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdin"]
        return parse_stream_wav(self._run(cmd, text))

    def phonemes(self, text: str, voice: str) -> str:
        """What ``voice`` says for ``text``, in IPA (no audio; speed and pitch do not change it): one line,
        words separated by single spaces, without espeak-ng's language-switch marks such as ``(en)``.
        RuntimeError on failure."""
        out = self._run(["-q", "--ipa", "-b", "1", "-v", voice, "--stdin"], text).decode("utf-8", errors="replace")
        return " ".join(LANGUAGE_SWITCH.sub(" ", out).split())

    def _run(self, args: list[str], text: str) -> bytes:
        env = {**os.environ, **dict(self.env)}
        try:
            done = subprocess.run([self.executable, *args], input=text.encode(), capture_output=True, env=env,
                                  timeout=TIMEOUT_S)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"espeak-ng hung for {TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            message = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"espeak-ng exited with {done.returncode}: {message}")
        return done.stdout


def parse_stream_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Samples and rate of espeak-ng's ``--stdout`` WAV (16-bit mono PCM, 44-byte header whose size
    fields are placeholders because it is written as a stream, so they are ignored)."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE" or data[36:40] != b"data":
        raise RuntimeError(f"espeak-ng wrote no WAV stream ({len(data)} bytes)")
    channels, rate = struct.unpack("<HI", data[22:28])
    bits = struct.unpack("<H", data[34:36])[0]
    if channels != 1 or bits != 16:
        raise RuntimeError(f"espeak-ng wrote {channels} channel(s) of {bits}-bit audio, expected mono 16-bit")
    body = data[44:len(data) - (len(data) - 44) % 2]
    samples = np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0
    if samples.size == 0 or not np.any(samples):
        raise RuntimeError("espeak-ng wrote no sound")
    return samples, rate


def audio_path(row: dict, audio_format: str) -> str:
    """The row's ``audio_filepath`` with the suffix of ``audio_format`` (flac or wav)."""
    return str(Path(row["audio_filepath"]).with_suffix(f".{audio_format}"))


def synthesize_one(espeak: Espeak, row: dict, out_dir: Path, audio_format: str = "flac") -> float:
    """Write ``out_dir/<row audio_filepath, as audio_format>`` unless it exists; returns its duration in seconds."""
    target = out_dir / audio_path(row, audio_format)
    if target.is_file():
        return sf.info(str(target)).duration
    samples, rate = espeak.wav(row["speak"], row["voice"], row["speed"], row["pitch"])
    audio = soxr.resample(samples, rate, SAMPLE_RATE) * GAIN
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # libsndfile rounds float to 16 bits differently for WAV (x 32767) and FLAC (x 32768): round here, as its
    # FLAC writer does, so both formats hold the same samples
    pcm = np.clip(np.round(audio * np.float32(32768)), -32768, 32767).astype(np.int16)
    sf.write(str(tmp), pcm, SAMPLE_RATE, format=AUDIO_FORMATS[audio_format], subtype="PCM_16")
    os.replace(tmp, target)
    return len(audio) / SAMPLE_RATE


_worker: tuple[Espeak, Path, str] | None = None


def _init(espeak: Espeak, out_dir: Path, audio_format: str) -> None:
    global _worker
    _worker = (espeak, out_dir, audio_format)


def _job(row: dict) -> tuple[str, float | None, str]:
    assert _worker is not None
    espeak, out_dir, audio_format = _worker
    try:
        return row["id"], synthesize_one(espeak, row, out_dir, audio_format), ""
    except Exception as err:  # any failure costs this utterance only; reported by id
        return row["id"], None, f"{type(err).__name__}: {err}"


@dataclass(frozen=True)
class SynthesisReport:
    """What a run did: utterances written, failed, audio seconds, wall seconds, the output manifest."""

    written: int
    failed: int
    audio_s: float
    wall_s: float
    manifest: Path


def synthesize_manifest(manifest: Path, out_dir: Path, espeak: Espeak, workers: int,
                        audio_format: str = "flac") -> SynthesisReport:  # fmt: skip
    """Synthesize every row of a prepared manifest into ``out_dir`` with ``workers`` processes.

    Writes ``out_dir/<manifest name>`` with ``duration`` filled, in input order, holding only the
    utterances whose audio exists; ``audio_filepath`` stays relative to ``out_dir``, its suffix that of
    ``audio_format`` (``flac`` or ``wav``).
    """
    if audio_format not in AUDIO_FORMATS:
        raise ConfigError(f"audio format {audio_format!r}: choose one of {sorted(AUDIO_FORMATS)}")
    rows = _read_rows(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    durations: dict[str, float] = {}
    failed = 0
    start = time.perf_counter()
    with Pool(max(1, workers), initializer=_init, initargs=(espeak, out_dir, audio_format)) as pool:
        for n, (uid, duration, error) in enumerate(pool.imap_unordered(_job, rows, chunksize=8), start=1):
            if duration is None:
                failed += 1
                log.warning("%s: skipped, %s", uid, error)
            else:
                durations[uid] = duration
            if n % 5000 == 0:
                log.info("%d/%d utterances, %.0f s of audio", n, len(rows), sum(durations.values()))
    wall = time.perf_counter() - start
    done = [{**row, "audio_filepath": audio_path(row, audio_format), "duration": round(durations[row["id"]], 3)}
            for row in rows if row["id"] in durations]  # fmt: skip
    path = write_manifest(done, out_dir / manifest.name)
    return SynthesisReport(len(done), failed, sum(durations.values()), wall, path)


def phonemize_manifest(manifest: Path, espeak: Espeak, workers: int) -> int:
    """Add ``phonemes`` (:meth:`Espeak.phonemes` of each row's ``speak`` in its ``voice``) to every row of a
    prepared manifest, in place; returns how many rows failed (logged, left with empty phonemes).

    Why: a CTC head on what the synthesizer said, not on the spelling (``train.ctc_units: phonemes``):
    English spelling was the demo encoder's hardest CTC target (session 7, dev CTC WER 33 % against
    12-18 % for it, pt, es, de). Done at prepare time, with the espeak-ng the audio is made with.
    """
    rows = _read_rows(manifest)
    with Pool(max(1, workers)) as pool:
        said = pool.map(partial(_phonemes_job, espeak), rows, chunksize=32)
    failed = 0
    for row, (phonemes, error) in zip(rows, said, strict=True):
        if error:
            failed += 1
            log.warning("%s: no phonemes, %s", row["id"], error)
        row["phonemes"] = phonemes
    write_manifest(rows, manifest)
    return failed


def _phonemes_job(espeak: Espeak, row: dict) -> tuple[str, str]:
    try:
        return espeak.phonemes(row["speak"], row["voice"]), ""
    except Exception as err:  # any failure costs this row's phonemes only; reported by id
        return "", f"{type(err).__name__}: {err}"


def _read_rows(manifest: Path) -> list[dict]:
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found (run prepare first)")
    rows = []
    with manifest.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{manifest}:{number}: not valid JSON ({err.msg})") from None
            missing = [k for k in ("id", "audio_filepath", "speak", "voice", "speed", "pitch") if k not in row]
            if missing:
                raise DataError(f"{manifest}:{number}: missing {missing}; is this a prepared manifest?")
            rows.append(row)
    return rows
