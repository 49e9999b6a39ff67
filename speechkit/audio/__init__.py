"""Audio leaves: file and array input (``io``), the log-mel front end (``features``). Nothing here imports the model.

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

__all__ = [
    "FILL_ZERO_RATE",
    "SAMPLE_RATE",
    "AudioInfo",
    "AudioWindow",
    "Features",
    "LogMelFrontend",
    "Waveform",
    "audio_info",
    "iter_audio_windows",
    "load_audio",
    "num_audio_tokens",
    "num_frames",
    "read_segment",
]
