from __future__ import annotations

import subprocess
import sys

PURE_MODULES = (
    "inference.validation",
    "inference.samplers",
    "inference.registry",
    "inference.presets",
    "inference.infotext",
    "inference.images",
    "inference.upscale",
)


def test_checks_the_bot_uses_do_not_import_torch() -> None:
    """The bot validates requests and lists models without paying for the torch import."""
    imports = "; ".join(f"import {module}" for module in PURE_MODULES)
    check = "import sys; heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules)"
    code = f"{imports}; {check}; print(sorted(heavy))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
