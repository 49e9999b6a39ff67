"""The music filter: webrtcvad's detections kept only where they sound like a voice articulating.

webrtcvad is at heart an energy and spectral-shape detector. On our measurements at aggressiveness 3
it flags 100 % of a sustained synthetic chord, 97 % of stationary white noise and 76 % of a drum-like
click track. The filter keeps a flagged frame only when the flagged frames around it
(``window_s``) show the two things speech has and music rarely has together
(features: :mod:`speechkit.audio.vad_frames`):

- a voice: enough of them are voiced, i.e. periodic (``VOICED_PERIODICITY``) at a pitch of 60-500 Hz
  that moves smoothly from frame to frame (``PITCH_STEP_OCTAVES``). Rejects noise, noise bursts,
  drums (a kick's pitch falls too fast) and inharmonic chords;
- articulation: of the voiced frames that have a voiced frame 50 ms before them, enough changed the
  shape of their spectrum by more than ``ARTICULATION_DB``, as formants move between phonemes.
  Rejects held, tremolo and struck (piano-like) chords, hums and drones, whose spectral shape stays put.

Measured per flagged frame on 2 s windows: the jfk clip and 16 espeak-ng sentences give voiced fractions
of 0.18-0.98 and articulated fractions of 0.42-1.0 (Dutch with its long steady vowels is the lowest);
drums stay under 0.15 voiced; chords, piano and a hum under 0.05 articulated, saw and square-wave
melodies (whose note changes move the spectrum) under 0.15. The defaults (0.3 and 0.4) sit between;
eval/results/longform.md has how far each can move before a test file fails.

Within each detector region (flagged runs joined over pauses shorter than ``min_silence``), each run
of passing frames is kept widened by half a window on both sides, up to the region's ends: the frames
at the ends of speech see less of it than those in the middle, and a region's edges are the
detector's (then snapped to the energy by :mod:`speechkit.audio.vad`). Speech running straight into
music (no pause between) can therefore keep up to half a window of the music.
"""

from __future__ import annotations

import numpy as np

from speechkit.audio.vad_frames import FRAME_S, SHAPE_LAG, FrameScores

VOICED_PERIODICITY = 0.7  # a frame is voiced at this periodicity or more ...
PITCH_STEP_OCTAVES = 0.05  # ... when its pitch is within this many octaves of a neighbour's (10 ms away)
ARTICULATION_DB = 2.0  # a voiced frame is articulated when its spectral shape moved this much in 50 ms


def music_filter(
    scores: FrameScores, window_s: float, min_voiced_fraction: float, min_articulation: float, min_silence: int
) -> np.ndarray:
    """Speech decisions with music, hums, drones and noise removed; (F,) bool.

    ``scores`` must carry voice features (``FrameScorer(..., voice_features=True)``). A flagged frame
    passes when, over the flagged frames within ``window_s`` seconds centred on it, at least
    ``min_voiced_fraction`` are voiced and at least ``min_articulation`` of the voiced pairs 50 ms
    apart are articulated (module docstring); ``min_silence`` (frames) joins a region's runs.
    """
    half = max(1, round(window_s / FRAME_S / 2))
    flagged = scores.speech
    voiced = flagged & (scores.periodicity >= VOICED_PERIODICITY) & _smooth_pitch(scores.pitch_lag)
    pairs = np.zeros_like(voiced)
    pairs[SHAPE_LAG:] = voiced[SHAPE_LAG:] & voiced[:-SHAPE_LAG]
    articulated = pairs & (scores.shape_change_db > ARTICULATION_DB)
    voiced_n = _window_counts(voiced, half)
    passing = (
        flagged
        & (voiced_n >= min_voiced_fraction * _window_counts(flagged, half))
        & (voiced_n > 0)
        & (_window_counts(articulated, half) >= min_articulation * _window_counts(pairs, half))
        & (_window_counts(pairs, half) > 0)
    )
    out = np.zeros_like(flagged)
    for a, b in _joined_runs(flagged, min_silence):
        for start, end in _joined_runs(passing[a:b], min_silence):
            out[max(a, a + start - half) : min(b, a + end + half)] = True
    return out


def _smooth_pitch(lag: np.ndarray) -> np.ndarray:
    """(F,) bool: the pitch is within PITCH_STEP_OCTAVES of the previous or the next frame's."""
    octaves = np.log2(np.maximum(lag, 1).astype(np.float32))
    close = np.abs(np.diff(octaves)) < PITCH_STEP_OCTAVES
    out = np.zeros(len(lag), dtype=bool)
    out[1:] |= close
    out[:-1] |= close
    return out & (lag > 0)


def _window_counts(flags: np.ndarray, half: int) -> np.ndarray:
    """How many of flags[i - half : i + half + 1] are set, for each i (clipped to the array), in O(n)."""
    c = np.concatenate([[0], np.cumsum(flags, dtype=np.int32)])
    i = np.arange(len(flags))
    return c[np.minimum(i + half + 1, len(flags))] - c[np.maximum(i - half, 0)]


def _joined_runs(flags: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """[start, end) frame runs of ``flags``, joined across gaps shorter than ``min_gap`` frames."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    runs: list[tuple[int, int]] = []
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        if runs and a - runs[-1][1] < min_gap:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return runs
