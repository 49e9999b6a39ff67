"""Audio leaves: file and array input (``io``). Nothing here imports the model.

``SAMPLE_RATE`` and ``FILL_ZERO_RATE`` are imported from here by the rest of speechkit.
"""

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
    "Waveform",
    "audio_info",
    "iter_audio_windows",
    "load_audio",
    "read_segment",
]
