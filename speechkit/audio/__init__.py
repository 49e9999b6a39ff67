"""Audio leaves: file and array input (``io``), the log-mel front end (``features``), speech detection (``vad``).

Nothing here imports the model.

``SAMPLE_RATE`` and ``FILL_ZERO_RATE`` are imported from here by the rest of speechkit.
"""

from speechkit.audio.features import Features, LogMelFrontend, num_audio_tokens, num_frames
from speechkit.audio.io import (
    FILL_ZERO_RATE,
    SAMPLE_RATE,
    AudioInfo,
    AudioWindow,
    Waveform,
    audio_info,
    iter_audio_windows,
    load_audio,
    read_segment,
)
from speechkit.audio.vad import VAD_METHODS, SpeechSegment, VadOptions, detect_speech

__all__ = [
    "FILL_ZERO_RATE",
    "SAMPLE_RATE",
    "VAD_METHODS",
    "AudioInfo",
    "AudioWindow",
    "Features",
    "LogMelFrontend",
    "SpeechSegment",
    "VadOptions",
    "Waveform",
    "audio_info",
    "detect_speech",
    "iter_audio_windows",
    "load_audio",
    "num_audio_tokens",
    "num_frames",
    "read_segment",
]
