"""Streaming recognition and translation: the model step, the commit policy and the engine between them.

    from speechkit.streaming import StreamingEngine, StreamOptions, PipelineStep
    engine = StreamingEngine(PipelineStep(pipeline), StreamOptions(task="both", target="de"))
    engine.insert_audio(chunk); update = engine.process(); ...; last = engine.finish()
"""

from speechkit.streaming.detector import SpeechDetector, VadDetector
from speechkit.streaming.engine import StreamError, StreamingEngine
from speechkit.streaming.policy import LocalAgreement, estimate_times, join_units, split_units
from speechkit.streaming.records import Segment, StreamOptions, StreamTask, Update, Word
from speechkit.streaming.step import ModelStep, PipelineStep, StepRequest, StepResult

__all__ = [
    "LocalAgreement",
    "ModelStep",
    "PipelineStep",
    "Segment",
    "SpeechDetector",
    "StepRequest",
    "StepResult",
    "StreamError",
    "StreamOptions",
    "StreamTask",
    "StreamingEngine",
    "Update",
    "VadDetector",
    "Word",
    "estimate_times",
    "join_units",
    "split_units",
]
