"""Training: staged recipes (text pre-training, audio alignment, LoRA multi-task), resumable checkpoints."""
