"""The settings and the command line load without discord, torch or the cogs: ``easel explain``,
``easel doctor`` and every bad-argument exit pay for neither (import-linter cannot see an import
inside a function, so this runs them)."""

from __future__ import annotations

import subprocess
import sys


def test_the_settings_and_the_command_line_import_no_discord_torch_or_cogs() -> None:
    code = (
        "import sys, bot.settings, bot.cli.main; "
        "print(sorted({'discord', 'torch', 'cogs'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
