"""What one wildcard file may cost: a file past a bound (its size, YAML aliases, its number of
wildcards) is left out with a line in the log, and the folder is read once for each version
of it, not at each plan."""

from __future__ import annotations

import logging
import os
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from bot.policy.prompt_safety import plan_request
from bot.requests import RenderRequest
from inference.prompts import UnknownWildcardError, WildcardLibrary, expand_prompt
from inference.prompts import wildcards as wildcard_module
from inference.prompts.stopping import PlanStopped, stopping_when
from inference.prompts.wildcards import MAX_WILDCARD_FILE_BYTES


def alias_bomb(levels: int) -> str:
    """A YAML file whose mapping ``l{n}`` holds ``l{n-1}`` twice, by alias: 2**n paths to
    walk in a few hundred bytes (the 17 levels of the audit: 13 s and 330 MB at each plan)."""
    lines = ["l0: &l0 {a: [x], b: [y]}"]
    lines += [f"l{i}: &l{i} {{p: *l{i - 1}, q: *l{i - 1}}}" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def written_long_ago(*paths: Path) -> None:
    """Date the files' last change a minute back: a text file read then is settled (kept,
    ``LISTING_SETTLED_NS``)."""
    long_ago = time.time_ns() - 60_000_000_000
    for path in paths:
        os.utime(path, ns=(long_ago, long_ago))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "colour.txt").write_text("red\nblue\n", encoding="utf-8")
    (tmp_path / "pets.yaml").write_text("pets:\n  - cat\n  - dog\n", encoding="utf-8")
    written_long_ago(tmp_path / "colour.txt")
    return tmp_path


def opened_in(monkeypatch: pytest.MonkeyPatch, folder: Path) -> list[str]:
    """The names of the files of ``folder`` opened to be read from now on (``read_text``
    opens too)."""
    opened: list[str] = []
    real_open = Path.open

    def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path.parent == folder and "r" in kwargs.get("mode", args[0] if args else "r"):
            opened.append(path.name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counted)
    return opened


def planned_text(prompt: str, folder: Path, seed: int = 1) -> str:
    request = plan_request(RenderRequest(prompt, "", seed=seed, steps=2), (), folder)
    [[_, _, text, _]] = request.options["wildcard_draws"]["draws"]
    return str(request.options["wildcard_draws"]["texts"][text])


def left_out_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]


def test_a_yaml_alias_bomb_is_left_out_at_once_and_the_other_wildcards_work(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 16 levels: 131,072 paths, seconds of work and hundreds of MB when walked.
    (folder / "bomb.yaml").write_text(alias_bomb(16), encoding="utf-8")
    caplog.set_level(logging.WARNING, "inference.prompts.wildcards")
    started = time.monotonic()
    library = WildcardLibrary(folder)
    assert library.names() == ["colour", "pets"]
    assert expand_prompt("a __colour__ __pets__", 3, library)[0].text.startswith("a ")
    assert time.monotonic() - started < 2
    # A member naming one of its wildcards is told what one naming no wildcard is.
    with pytest.raises(UnknownWildcardError) as refused:
        expand_prompt("a __l1/p/a__", 1, library)
    assert refused.value.name == "l1/p/a" and refused.value.available == ["colour", "pets"]
    [told] = left_out_lines(caplog)
    assert str(folder / "bomb.yaml") in told and "YAML alias *l0" in told
    assert library.files_left_out() == {
        folder / "bomb.yaml": (
            "it uses the YAML alias *l0, which wildcard files may not (write the values out)"
        )
    }
    # Told once for this version of the file, not at each plan.
    WildcardLibrary(folder).names()
    assert len(left_out_lines(caplog)) == 1


def test_merge_keys_deep_nesting_and_bad_files_are_left_out_each_with_its_reason(
    folder: Path,
) -> None:
    # PyYAML itself copies ``<<:`` keys at each level: 18 levels took 1.7 s.
    merges = "m0: &m0 {a: [x]}\n" + "".join(
        f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n" for i in range(1, 19)
    )
    (folder / "merges.yaml").write_text(merges, encoding="utf-8")
    # libyaml's composer crashed the process on 100,000 of these; Python's stops.
    (folder / "deep.yaml").write_text("d: " + "[" * 5_000 + "]" * 5_000, encoding="utf-8")
    (folder / "broken.json").write_text('{"a": [', encoding="utf-8")
    (folder / "latin.yaml").write_bytes(b"a: [caf\xe9]\n")
    left_out = WildcardLibrary(folder).files_left_out()
    assert "YAML alias *m0" in left_out.pop(folder / "merges.yaml")
    assert all(reason.startswith("it cannot be read: ") for reason in left_out.values())
    assert set(left_out) == {folder / name for name in ("deep.yaml", "broken.json", "latin.yaml")}


def test_a_file_over_the_size_limit_is_left_out_unread(
    folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with (folder / "huge.txt").open("wb") as huge:  # sparse: no disk, nothing to read
        huge.truncate(MAX_WILDCARD_FILE_BYTES + 1)
    (folder / "just.txt").write_text("x" * (MAX_WILDCARD_FILE_BYTES - 1), encoding="utf-8")
    caplog.set_level(logging.WARNING, "inference.prompts.wildcards")
    opened = opened_in(monkeypatch, folder)
    library = WildcardLibrary(folder)
    assert library.names() == ["colour", "just", "pets"]
    with pytest.raises(UnknownWildcardError):
        expand_prompt("__huge__", 1, library)
    assert "huge.txt" not in opened
    [told] = left_out_lines(caplog)
    assert str(folder / "huge.txt") in told and "over the limit of 10,000,000" in told


def test_a_file_of_too_many_wildcards_is_left_out(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wildcard_module, "MAX_WILDCARD_FILE_NAMES", 3)
    (folder / "three.json").write_text('{"a": "1", "b": "2", "c": "3"}', encoding="utf-8")
    (folder / "four.json").write_text('{"d": "1", "e": "2", "f": "3", "g": "4"}', "utf-8")
    library = WildcardLibrary(folder)
    assert library.names() == ["a", "b", "c", "colour", "pets"]
    assert library.files_left_out() == {
        folder / "four.json": "it holds more than the limit of 3 wildcards"
    }


def test_plans_read_the_folder_once_until_a_file_changes(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = opened_in(monkeypatch, folder)
    first = [planned_text("a __colour__ __pets__", folder, seed) for seed in range(6)]
    assert sorted(opened) == ["colour.txt", "pets.yaml"]  # by the first plan, not the next 5
    assert len(set(first)) > 1
    assert set(first) <= {f"a {c} {p}" for c in ("red", "blue") for p in ("cat", "dog")}
    assert first == [planned_text("a __colour__ __pets__", folder, seed) for seed in range(6)]
    (folder / "colour.txt").write_text("green\n", encoding="utf-8")
    written_long_ago(folder / "colour.txt")  # settled: kept once read
    assert planned_text("a __colour__ __pets__", folder).startswith("a green ")
    # Only the file changed is read again: pets.yaml is parsed once for all these versions.
    assert sorted(opened) == ["colour.txt", "colour.txt", "pets.yaml"]
    (folder / "new.txt").write_text("fresh\n", encoding="utf-8")  # a file added: seen at once
    assert planned_text("a __new__ __pets__", folder) in {"a fresh cat", "a fresh dog"}
    assert sorted(opened) == ["colour.txt", "colour.txt", "new.txt", "pets.yaml"]


def test_the_prompt_readers_threads_read_a_new_folder_once(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = opened_in(monkeypatch, folder)
    start = threading.Barrier(4)
    texts: list[str] = []

    def plan() -> None:
        start.wait()
        texts.append(planned_text("a __colour__ __pets__", folder))

    threads = [threading.Thread(target=plan) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(texts)) == 1 and len(texts) == 4
    assert sorted(opened) == ["colour.txt", "pets.yaml"]


def test_a_text_file_gone_before_its_first_read_is_unknown_and_told(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "inference.prompts.wildcards")
    (folder / "gone.txt").write_text("soon\n", encoding="utf-8")
    library = WildcardLibrary(folder)
    assert "gone" in library.names()  # listed; read at its first use
    (folder / "gone.txt").unlink()
    with pytest.raises(UnknownWildcardError):
        expand_prompt("__gone__", 1, library)
    assert library.files_left_out() == {
        folder / "gone.txt": "it cannot be read: No such file or directory"
    }
    [told] = left_out_lines(caplog)
    assert str(folder / "gone.txt") in told


def test_a_folder_linked_under_a_second_name_is_listed_under_both_and_a_loop_ends(
    folder: Path,
) -> None:
    (folder / "sdxl").mkdir()
    (folder / "sdxl" / "styles.txt").write_text("ink\n", encoding="utf-8")
    (folder / "sd15").symlink_to("sdxl")  # a second name, as dynamicprompts lists it
    (folder / "loop").symlink_to(".")  # a link back up: listed once, not 40 levels deep
    library = WildcardLibrary(folder)
    assert library.names() == ["colour", "pets", "sd15/styles", "sdxl/styles"]
    assert expand_prompt("__sdxl/styles__ __sd15/styles__", 1, library)[0].text == "ink ink"


def big_file_read_held(
    monkeypatch: pytest.MonkeyPatch, folder: Path
) -> tuple[threading.Event, threading.Event]:
    """``folder/big.txt`` (its first read holds until the second event is set, the first
    set meanwhile), each plan on its own thread."""
    (folder / "big.txt").write_text("huge\n", encoding="utf-8")
    reading, go_on = threading.Event(), threading.Event()
    real_text = wildcard_module._file_text

    def held(path: Path, errors: str = "strict") -> str:
        if path.name == "big.txt":
            reading.set()
            assert go_on.wait(30)
        return real_text(path, errors)

    monkeypatch.setattr(wildcard_module, "_file_text", held)
    return reading, go_on


def test_a_small_wildcard_does_not_wait_for_another_plans_big_file(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reading, go_on = big_file_read_held(monkeypatch, folder)
    big = threading.Thread(target=expand_prompt, args=("__big__", 1, WildcardLibrary(folder)))
    big.start()
    try:
        assert reading.wait(30)
        # While big.txt is being read: other files' wildcards, a "did you mean", and a plan
        # of __big__ whose member stops waiting all answer (the old shared lock: each waited
        # for big.txt, until its budget ran out).
        stop = threading.Event()
        threading.Timer(10, stop.set).start()  # only if this were held up
        library = WildcardLibrary(folder)
        assert stopping_when(stop, expand_prompt, "a __colour__", 1, library)[0].text in {
            "a red",
            "a blue",
        }
        with pytest.raises(UnknownWildcardError) as unknown:
            stopping_when(stop, expand_prompt, "__colours__", 1, library)
        assert unknown.value.suggestions == ["colour"]
        assert not stop.is_set()
        stopped = threading.Event()
        stopped.set()
        with pytest.raises(PlanStopped):
            stopping_when(stopped, expand_prompt, "__big__", 1, library)
    finally:
        go_on.set()
        big.join()


def test_a_plan_stopped_while_it_protects_a_files_values_leaves_its_work_to_the_next(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / "many.txt").write_text("".join(f"v{i}\n" for i in range(20)), encoding="utf-8")
    protected: list[str] = []
    stop = threading.Event()
    real_protect = wildcard_module.protect

    def counted(text: str, **kwargs: Any) -> str:
        if text.startswith("v"):  # a value (the prompt typed is protected too)
            protected.append(text)
            if len(protected) == 5:
                stop.set()  # the member stops waiting for the plan
        return real_protect(text, **kwargs)

    monkeypatch.setattr(wildcard_module, "protect", counted)
    library = WildcardLibrary(folder)
    with pytest.raises(PlanStopped):
        stopping_when(stop, expand_prompt, "__many__", 1, library)
    assert len(protected) == 5
    # Another file added meanwhile: a new version of the folder, which keeps that work too.
    (folder / "other.txt").write_text("x\n", encoding="utf-8")
    assert expand_prompt("__many__", 1, WildcardLibrary(folder))[0].text.startswith("v")
    assert sorted(protected) == sorted(f"v{i}" for i in range(20))  # each value once


def test_weighted_yaml_and_json_values_keep_dynamicprompts_weights(folder: Path) -> None:
    # dynamicprompts' own reading of a collection's items (``_parse_structured_file_dict``,
    # private): an upgrade that reads them otherwise fails here.
    (folder / "paints.yaml").write_text(
        "paints:\n"
        "  - oil\n"
        "  - '2::watercolor'\n"
        "  - {text: acrylic, weight: 3}\n"
        "  - {content: gouache, weight: 0.5}\n"
        "  - {text: never, weight: 0}\n"
        "  - {text: plain}\n",
        encoding="utf-8",
    )
    (folder / "inks.json").write_text('{"inks": ["4::sepia", {"text": "indigo"}]}', "utf-8")
    library = WildcardLibrary(folder)
    manager = library.context(1).wildcard_manager

    def weighted(name: str) -> list[tuple[str, float]]:
        return [(str(item), getattr(item, "weight", 1.0)) for item in manager.get_values(name)]

    assert sorted(weighted("paints")) == [
        ("acrylic", 3.0),
        ("gouache", 0.5),
        ("never", 0.0),
        ("oil", 1.0),
        ("plain", 1.0),
        ("watercolor", 2.0),
    ]
    assert sorted(weighted("inks")) == [("indigo", 1.0), ("sepia", 4.0)]
    drawn = {expand_prompt("__paints__", seed, library)[0].text for seed in range(200)}
    assert drawn == {"acrylic", "gouache", "oil", "plain", "watercolor"}


def test_a_new_text_file_read_while_it_is_written_is_read_again_at_the_next_plan(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No settled read of it to fall back on: that plan finds it empty, the next reads it
    again though the folder's listing is unchanged."""
    real_text = wildcard_module._file_text
    reads: list[Path] = []

    def mid_rewrite(path: Path, errors: str = "strict") -> tuple[str, None]:
        reads.append(path)
        if reads.count(folder / "colour.txt") == 1:  # caught between truncate and write
            return "", None
        return real_text(path, errors)

    monkeypatch.setattr(wildcard_module, "_file_text", mid_rewrite)
    with pytest.raises(UnknownWildcardError):
        expand_prompt("__colour__", 1, WildcardLibrary(folder))
    assert expand_prompt("__colour__", 1, WildcardLibrary(folder))[0].text in {"red", "blue"}


def test_plans_never_see_a_text_file_rewritten_in_place_empty_or_half_written(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer truncates colour.txt and writes it again in two parts, over and over, as an
    editor or ``echo > file`` does; plans meanwhile draw from its last settled read (red or
    blue), never an empty file nor half a line; once the writer stops and the file settles,
    they draw from what it wrote."""
    # However long a loaded machine stalls the writer mid-write, its file is not settled
    # (the fixture's, written a minute back, is).
    monkeypatch.setattr(wildcard_module, "LISTING_SETTLED_NS", 30_000_000_000)
    colour = folder / "colour.txt"
    assert expand_prompt("__colour__", 1, WildcardLibrary(folder))[0].text in {"red", "blue"}
    stop = threading.Event()
    rewrites = 0

    def rewrite_in_place() -> None:
        nonlocal rewrites
        while not stop.is_set():
            with colour.open("w", encoding="utf-8") as file:  # truncated: empty for a moment
                file.flush()
                time.sleep(0.0005)
                file.write("crimson\nco")
                file.flush()
                time.sleep(0.0005)
                file.write("balt\n")
            rewrites += 1

    writer = threading.Thread(target=rewrite_in_place)
    writer.start()
    drawn: set[str] = set()
    try:
        plans = 0
        # Enough plans to cross many rewrites (bounded however slow the machine is).
        while plans < 2000 and (plans < 200 or rewrites < 100):
            library = WildcardLibrary(folder)
            drawn |= {e.text for e in expand_prompt("__colour__", plans, library, count=4)}
            plans += 1
    finally:
        stop.set()
        writer.join()
    assert drawn <= {"red", "blue"} and rewrites > 0
    written_long_ago(colour)
    later = {e.text for e in expand_prompt("__colour__", 1, WildcardLibrary(folder), count=20)}
    assert later == {"crimson", "cobalt"}


class MovedClock:
    """The wildcard module's clocks (its ``time``), moved forward at will (``moved_ns``): a
    settle window passes without waiting it out."""

    def __init__(self) -> None:
        self.moved_ns = 0

    def time_ns(self) -> int:
        return time.time_ns() + self.moved_ns

    def monotonic_ns(self) -> int:
        return time.monotonic_ns() + self.moved_ns


def drawn(wildcard: str, folder: Path) -> set[str]:
    """What a plan (a library of its own) draws from ``wildcard`` in 30 draws."""
    return {e.text for e in expand_prompt(wildcard, 1, WildcardLibrary(folder), count=30)}


def test_a_text_file_dated_in_the_future_settles_once_seen_unchanged_for_the_window(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A modification time ahead of this machine's clock (clock skew, a restored backup,
    ``touch -d tomorrow``) never grows old: the file's new values are drawn once this process
    saw it unchanged for the settle window on its own clock, and kept, not read at each
    look-up until the clock catches up."""
    clock = MovedClock()
    monkeypatch.setattr(wildcard_module, "time", clock)
    assert drawn("__colour__", folder) == {"red", "blue"}
    colour = folder / "colour.txt"
    colour.write_text("crimson\ncobalt\n", encoding="utf-8")
    tomorrow = time.time_ns() + 86_400_000_000_000
    os.utime(colour, ns=(tomorrow, tomorrow))
    assert drawn("__colour__", folder) == {"red", "blue"}  # just seen: maybe mid-write
    clock.moved_ns = wildcard_module.LISTING_SETTLED_NS
    opened = opened_in(monkeypatch, folder)
    assert drawn("__colour__", folder) == {"crimson", "cobalt"}
    assert all(drawn("__colour__", folder) == {"crimson", "cobalt"} for _ in range(5))
    assert opened == ["colour.txt"]


def test_a_glob_drawing_an_unsettled_read_keeps_nothing_when_another_thread_settles_it(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``__*__`` draws colour.txt's last settled values while it is unsettled; while the glob
    reads its other files, a plan on another thread finds colour.txt settled and keeps it.
    The glob's values must not be kept as settled then: later plans draw the new values
    through ``__*__`` as through ``__colour__``."""
    other = folder / "zz.txt"
    other.write_text("zed\n", encoding="utf-8")
    written_long_ago(other)
    assert drawn("__*__", folder) == {"red", "blue", "cat", "dog", "zed"}
    (folder / "colour.txt").write_text("crimson\ncobalt\n", encoding="utf-8")  # unsettled
    other.write_text("zed\n\n", encoding="utf-8")  # a new version too, settled: read again
    written_long_ago(other)
    clock = MovedClock()
    monkeypatch.setattr(wildcard_module, "time", clock)
    real_text = wildcard_module._file_text
    on_other_thread: list[set[str]] = []

    def settled_elsewhere_meanwhile(path: Path, errors: str = "strict") -> tuple[Any, Any]:
        if path == other and not clock.moved_ns:
            clock.moved_ns = wildcard_module.LISTING_SETTLED_NS  # the window passes...
            plan = threading.Thread(
                target=lambda: on_other_thread.append(drawn("__colour__", folder))
            )
            plan.start()  # ...and another plan settles colour.txt
            plan.join(timeout=60)
        return real_text(path, errors)

    monkeypatch.setattr(wildcard_module, "_file_text", settled_elsewhere_meanwhile)
    expand_prompt("__*__", 1, WildcardLibrary(folder))
    assert on_other_thread == [{"crimson", "cobalt"}]
    assert drawn("__*__", folder) == {"crimson", "cobalt", "cat", "dog", "zed"}


def test_a_text_file_truncated_within_a_coarse_clock_tick_is_not_taken_as_settled(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAT dates a change by 2 s ticks: a file truncated just now can show a time 1.9 s
    back. Its empty read is not kept: the plan draws the last settled values."""
    colour = folder / "colour.txt"
    assert drawn("__colour__", folder) == {"red", "blue"}
    colour.write_text("", encoding="utf-8")  # truncated; its writer not there yet
    now = time.time_ns()
    os.utime(colour, ns=(now - 1_900_000_000, now - 1_900_000_000))
    frozen = types.SimpleNamespace(time_ns=lambda: now, monotonic_ns=time.monotonic_ns)
    monkeypatch.setattr(wildcard_module, "time", frozen)
    assert expand_prompt("__colour__", 1, WildcardLibrary(folder))[0].text in {"red", "blue"}
