"""Training: the demo corpus (data) and, later, the training loop."""
