"""The speech branch of Phi-4-multimodal: encoder, projector, LoRA-A decoder."""
