"""speechkit: speech recognition and translation with the speech branch of Phi-4-multimodal.

import speechkit
model = speechkit.load("microsoft/Phi-4-multimodal-instruct")   # or a local directory
print(model.transcribe(["talk.flac"])[0].text)
print(model.translate(["talk.flac"], to="fr", cot=True)[0].translation)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from speechkit.inference.pipeline import Pipeline

try:
    __version__ = version("speechkit")
except PackageNotFoundError:  # running from a checkout without install
    __version__ = "0.0.0+checkout"


def load(
    model: str = "microsoft/Phi-4-multimodal-instruct",
    *,
    device: str = "auto",
    dtype: str = "auto",
    lora: str = "merged",
) -> Pipeline:
    """Load a checkpoint (hub id or official-layout directory) for transcribe/translate/summarize/ask.

    ``lora="unmerged"`` keeps the speech adapter switchable (exact official numerics; needed for
    text-only requests); ``merged`` (default) folds it into the weights at load for speed.
    """
    from speechkit.inference.pipeline import Pipeline

    return Pipeline.load(model, device=device, dtype=dtype, lora=lora)
