"""dynamicprompts' parser shared by threads making their first parses at once
(``inference/prompts/parsing.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from dynamicprompts.parser.config import default_parser_config
from dynamicprompts.parser.parse import create_parser

from inference.prompts.parsing import EVERY_PARSE_ACTION
from inference.prompts.wildcards import WildcardLibrary, expand_prompt

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "a {2$$big|small|0.5::tiny} __colour__ {cat|dog} house"
THREADS = 8
# Each round starts cold: without ``parse_prompt``'s lock, 8 threads fail most rounds.
ROUNDS = 6

# Run in a fresh process, so that nothing parsed before. Between rounds, the process forgets
# its parser and the parses it kept, as a fresh process would start.
FIRST_PARSES_AT_ONCE = textwrap.dedent(
    """
    import json, sys, threading
    from dynamicprompts.parser import parse as dynamic_parse
    from inference.prompts import parsing, wildcards

    folder, template, threads, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    results = []
    for _ in range(rounds):
        dynamic_parse._parser_cache.clear()
        wildcards._parsed_prompt.cache_clear()
        wildcards._parsed_value.cache_clear()
        parsing._ready.clear()
        start = threading.Barrier(threads)
        texts = [None] * threads

        def first_expansion(index):
            library = wildcards.WildcardLibrary(folder)
            start.wait()
            try:
                expansions = wildcards.expand_prompt(template, index, library, count=3)
                texts[index] = [expansion.text for expansion in expansions]
            except Exception as error:
                texts[index] = repr(error)

        workers = [threading.Thread(target=first_expansion, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        results.append(texts)
    print(json.dumps(results))
    """
)


def test_threads_making_their_first_parses_at_once_expand_as_one_thread_does(
    tmp_path: Path,
) -> None:
    (tmp_path / "colour.txt").write_text("red\nblue\ngreen\n")
    library = WildcardLibrary(tmp_path)
    alone = [
        [expansion.text for expansion in expand_prompt(TEMPLATE, index, library, count=3)]
        for index in range(THREADS)
    ]
    arguments = [str(tmp_path), TEMPLATE, str(THREADS), str(ROUNDS)]
    child = subprocess.run(
        [sys.executable, "-c", FIRST_PARSES_AT_ONCE, *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    for round_texts in json.loads(child.stdout):
        assert round_texts == alone


def _uncalled_actions(parser: object) -> list[str]:
    """The parse actions of ``parser`` whose arguments pyparsing has not counted yet."""
    seen: set[int] = set()
    elements = [parser]
    uncalled = []
    while elements:
        element = elements.pop()
        if id(element) in seen:
            continue
        seen.add(id(element))
        for action in element.parseAction:  # type: ignore[attr-defined]
            cells = dict(zip(action.__code__.co_freevars, action.__closure__ or (), strict=True))
            if "found_arity" in cells and not cells["found_arity"].cell_contents:
                uncalled.append(action.__name__)
        elements.extend(getattr(element, "exprs", ()))
        if getattr(element, "expr", None) is not None:
            elements.append(element.expr)  # type: ignore[attr-defined]
        elements.extend(element.ignoreExprs)  # type: ignore[attr-defined]
    return uncalled


def test_the_readying_prompt_calls_every_parse_action() -> None:
    parser = create_parser(parser_config=default_parser_config)
    assert len(_uncalled_actions(parser)) >= 12
    parser.parse_string(EVERY_PARSE_ACTION, parse_all=True)
    assert _uncalled_actions(parser) == []
