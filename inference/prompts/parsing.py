"""dynamicprompts' parser, made ready by one thread before any thread shares it.

pyparsing finds out how many arguments a parse action takes at the action's first call, by
calling it with fewer and fewer until no ``TypeError`` comes back, and keeps that count
unguarded, one per action. Threads making their first parses at once (the planner's prompt
readers, a burst's first requests) push each other's counts past the right one: the parse fails
with ``TypeError: _parse_literal_command() missing 1 required positional argument``, and once a
wrong count is kept, every later parse in the process fails the same way. So before the first
parse of each process, one thread, holding a lock, builds the parser and calls each of its
actions once: every parse of a prompt or a wildcard's value goes through ``parse_prompt``,
whatever process or thread runs it. (dynamicprompts parses a drawn wildcard name such as
``__{a|b}__``'s itself, which comes only after the parse of the prompt that holds it, so
after the readying.) The readying prompt is written in the default grammar, the only one
Easel uses.
"""

from __future__ import annotations

import threading

from dynamicprompts.commands import Command
from dynamicprompts.parser.config import ParserConfig, default_parser_config
from dynamicprompts.parser.parse import parse

# A prompt reaching each of the default grammar's parse actions (literals, variants and their
# weights and bounds, wildcards and their variables, variables, ``%{...$$...}`` wraps):
# ``tests/prompts/test_parsing.py`` checks none is left uncalled.
EVERY_PARSE_ACTION = (
    "a ${v=x} ${w=!y} ${v} ${u:d} %{w $$ i} {2$$a|0.5::b|__c__} __d(v=e)__ __f__ __g${v}h__"
)
_READYING = threading.Lock()
_ready: set[ParserConfig] = set()


def parse_prompt(text: str, parser_config: ParserConfig = default_parser_config) -> Command:
    """dynamicprompts' ``parse``, safe for threads making their first parse at once."""
    if parser_config not in _ready:
        with _READYING:
            if parser_config not in _ready:
                parse(EVERY_PARSE_ACTION, parser_config=parser_config)
                _ready.add(parser_config)
    return parse(text, parser_config=parser_config)
