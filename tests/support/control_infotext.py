"""Reading back what ``inference.control_units.control_infotext`` writes: the product writes
a ControlNet unit's infotext and never reads one."""

from __future__ import annotations


def parse_control_infotext(value: str) -> dict[str, str]:
    """A ``ControlNet N`` infotext value back as its fields (the model keeps its hash)."""
    fields = {}
    for pair in value.split(", "):
        key, _, field = pair.partition(": ")
        fields[key] = field
    return fields
