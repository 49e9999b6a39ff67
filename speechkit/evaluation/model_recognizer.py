"""The speech model behind the runner's :class:`Recognizer` interface."""

from __future__ import annotations

from typing import Any

import torch

from speechkit import __version__
from speechkit.evaluation.recognizer import Hypothesis, Sample, Task
from speechkit.inference.pipeline import DecodeOptions, Pipeline
from speechkit.text.prompts import PromptSpec
from speechkit.text.prompts import Task as PromptTask


class PipelineRecognizer:
    """Decodes runner batches with a loaded :class:`Pipeline` (one prompt per task, as in the paper)."""

    def __init__(self, pipeline: Pipeline, name: str, options: DecodeOptions) -> None:
        self.pipeline = pipeline
        self.name = name
        self.options = options

    def metadata(self) -> dict[str, Any]:
        device = self.pipeline.device
        return {
            "model": self.name,
            "checkpoint": str(self.pipeline.loaded.root),
            "dtype": str(self.pipeline.model.decoder.embed_tokens.weight.dtype).removeprefix("torch."),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "lora": self.pipeline.loaded.lora,
            "max_new_tokens": self.options.max_new_tokens,
            "beam_size": self.options.beam_size,
            "speechkit_version": __version__,
        }

    def decode(self, batch: list[Sample], task: Task) -> list[Hypothesis]:
        spec = PromptSpec(PromptTask(task.kind), language=task.tgt_lang)
        rows = min(self.options.batch_size, max(1, len(batch)))
        options = DecodeOptions(batch_size=rows, max_new_tokens=self.options.max_new_tokens,
                                group_batches=-(-max(1, len(batch)) // rows),
                                beam_size=self.options.beam_size)  # fmt: skip
        results = self.pipeline.run([s.waveform for s in batch], spec, options, language=task.src_lang)
        return [Hypothesis(r.text, r.transcript) for r in results]


def load_model_recognizer(
    model: str, *, device: str = "auto", dtype: str = "auto", max_new_tokens: int | None = None, batch_size: int = 8,
    beam_size: int = 1,
) -> PipelineRecognizer:
    """``batch_size``: rows decoded at once; a runner batch larger than that is one continuous-batching group
    (greedy) or batch after batch (``beam_size`` > 1: beam search)."""
    options = DecodeOptions(batch_size=batch_size, max_new_tokens=max_new_tokens, beam_size=beam_size)
    return PipelineRecognizer(Pipeline.load(model, device=device, dtype=dtype), model, options)
