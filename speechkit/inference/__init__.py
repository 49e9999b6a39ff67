"""Drivers: generation, batching and the task pipeline over a loaded speech model."""
