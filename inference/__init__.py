"""Rendering: the engine, its models and passes (no discord)."""

from inference.torchao_noise import silence_torchao_noise

# Before any module here imports diffusers (and, through it, torchao).
silence_torchao_noise()
