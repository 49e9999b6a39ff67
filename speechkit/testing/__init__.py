"""Test helpers that ship with the package: tiny official-layout checkpoints and synthetic audio.

``released_config.json`` is the official ``config.json`` of microsoft/Phi-4-multimodal-instruct
(transcribed from public copies, see the reference notes), the starting point of every tiny config.
"""
