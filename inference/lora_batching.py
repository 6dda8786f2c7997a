"""Which LoRAs a prompt asks for, as a batch-key part: pure, so the queue can group requests.

Requests whose prompts name different LoRA sets must not share a pipeline call (a LoRA is
loaded into the model for the whole call). The engine also splits a call by LoRA set itself
(wildcards can pick LoRAs per picture), so this key only saves it from splitting batches.
"""

from __future__ import annotations

from inference.prompts import extract_extra_networks


def lora_batch_key(prompt: str) -> tuple[tuple[str, float, float], ...]:
    """The prompt's ``<lora:name:te:unet>`` tags as sorted (name, te weight, unet weight)."""
    networks = extract_extra_networks(prompt)[1]
    return tuple(sorted((n.name, n.weight, n.unet_weight) for n in networks if n.kind == "lora"))
