"""Wildcards (``__name__``) and dynamic prompts (``{a|b}``, ``{2$$a|b|c}``, ``{0.5::a|b}``).

Expansion is done by ``dynamicprompts``, seeded with the image seed (image ``i`` of a batch
uses ``seed + i``) so a stored seed reproduces the same text. Wildcards live in one folder:
``name.txt`` (one option a line, ``#`` comments) and ``.yaml``/``.json`` collections, used as
``__name__`` or ``__folder/name__``.

dynamicprompts gives meaning to characters the web UI syntax also uses (``|`` inside
``[a|b]`` nested in ``{...}``, ``#`` comments, ``$``, ``%``, a stray ``__``), so those are swapped
for private-use characters before expansion and restored after. ``\\{``, ``\\}``, ``\\|``... keep
their character literal. Only ``{}``, ``|`` and ``$$`` directly inside braces, ``::`` weights and
``__name__`` (letters, digits, ``_-./*``) reach dynamicprompts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import json
import logging
import os
import stat
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any, NamedTuple

import yaml
from dynamicprompts.commands import Command, VariantCommand, VariantOption, WildcardCommand
from dynamicprompts.enums import SamplingMethod
from dynamicprompts.parser.config import ParserConfig, default_parser_config
from dynamicprompts.samplers.base import Sampler
from dynamicprompts.samplers.random import RandomSampler
from dynamicprompts.sampling_context import SamplingContext
from dynamicprompts.sampling_result import SamplingResult
from dynamicprompts.types import ResultGen
from dynamicprompts.utils import is_empty_line, rotate_and_join
from dynamicprompts.wildcards import WildcardManager
from dynamicprompts.wildcards.collection import WildcardCollection
from dynamicprompts.wildcards.collection.list import ListWildcardCollection
from dynamicprompts.wildcards.collection.structured import _parse_structured_file_dict
from dynamicprompts.wildcards.item import WildcardItem
from dynamicprompts.wildcards.tree import WildcardTree
from dynamicprompts.wildcards.values import WildcardValues
from pyparsing import ParseBaseException

from inference.file_versions import LISTING_SETTLED_NS
from inference.names import as_typed
from inference.prompts.errors import (
    NestingError,
    PromptError,
    UnknownWildcardError,
    WildcardRecursionError,
)
from inference.prompts.flags import picture_seed
from inference.prompts.parsing import parse_prompt
from inference.prompts.stopping import checkpoint
from inference.quoting import cut

MAX_WILDCARD_DEPTH = 20
# dynamicprompts parses ``{`` recursively, about 25 stack frames a level: 39 levels overflow
# Python's stack, so deeper nesting is refused before it is parsed.
MAX_BRACE_NESTING = 10
# A wildcard file can turn a short prompt into megabytes; expansion stops past these.
MAX_EXPANDED_CHARS = 16_000
MAX_WILDCARD_EXPANSIONS = 1_000
NO_FOLDER = "no wildcards folder is configured: __name__ is left as typed"
# Sets of wildcard files whose protected values a library keeps.
_KEPT_NAMES = 1_000
# Values kept protected from one version of a folder to the next: about 2.5 files at the size
# limit, a few hundred MB at most.
_KEPT_PROTECTED = 1_000_000
# Texts kept parsed, in two caches so that members' prompts never evict the wildcard values:
# the values (the operator's), drawn by every request drawing from a file and at each draw of
# a one-value wildcard (pyparsing takes milliseconds a value); the prompts, parsed again by
# each picture and pass of their plan, a member's own text: a 4,000-character prompt of
# ``{a|b|c}`` choices keeps 0.58 MB parsed (1,000 characters: 0.13 MB), so 64 keep < 40 MB.
_KEPT_VALUES = 512
_KEPT_PROMPTS = 64
# A wildcard folder is read once for each version of it (``_SharedFolder``). A file whose
# reading would cost more than these bounds is left out: a member naming it is told it is
# unknown, the log names the file and the bound once, and so does ``easel doctor``.
# - Its size: the biggest real packs hold 1-5 MB in all; 10 MB of lines is about 400,000
#   values, read in a few seconds once (a 25 MB file of 1,000,000 lines cost 11-16 s and
#   400 MB at each plan when every plan read the folder again).
MAX_WILDCARD_FILE_BYTES = 10_000_000
# - A YAML alias (``*name``): dynamicprompts walks an aliased mapping once for each path to
#   it, so 26 nested levels of two aliases in 712 bytes were hours of work and GBs, and
#   PyYAML copies ``<<: *merge`` keys at each level too. Packs write their values out.
# - Its wildcards (``__file/key__`` names): every look-up of a new name matches them all.
MAX_WILDCARD_FILE_NAMES = 100_000
_WILDCARD_SUFFIXES = (".txt", ".yaml", ".json")
# Wildcard folders kept read: the bot's one, and those of tests and tools.
_KEPT_FOLDERS = 8
# Plane-15 private-use characters stand in for protected ASCII characters during expansion.
_SHIELD = 0xF0000
_SPECIAL = "{}|#$%_"


def _shield(char: str) -> str:
    return chr(_SHIELD + ord(char))


def _unshield(text: str) -> str:
    return "".join(chr(ord(c) - _SHIELD) if _SHIELD <= ord(c) < _SHIELD + 128 else c for c in text)


def _in_wildcard_name(char: str) -> bool:
    """Whether ``char`` may be in a ``__name__``: a letter or digit, ``_-./*``, or a mark (a
    name pasted in NFD spells ``é`` as ``e`` and U+0301)."""
    return char.isalnum() or char in "_-./*" or unicodedata.category(char)[0] == "M"


def _wildcard_end(text: str, start: int) -> int:
    """End of a ``__name__`` reference starting at ``start``, or -1."""
    position = start + 2
    while position < len(text) and _in_wildcard_name(text[position]):
        if text.startswith("__", position) and position > start + 2:
            return position + 2
        position += 1
    return -1


def _check_brace_nesting(shielded: str, where: str, wildcard: str | None = None) -> None:
    """Refuse ``{`` nested deeper than ``MAX_BRACE_NESTING`` (escaped braces are shielded);
    ``wildcard``: the wildcard whose value ``shielded`` is (its file at fault)."""
    depth = deepest = 0
    for char in shielded:
        if char == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif char == "}" and depth:
            depth -= 1
    if deepest > MAX_BRACE_NESTING:
        error = NestingError(f"{where} nests {{ }} braces {deepest} deep", MAX_BRACE_NESTING)
        if wildcard is not None:
            error.in_wildcard = wildcard
            error.file_fault = (
                f"a value nests {{ }} braces {deepest} deep, past the {MAX_BRACE_NESTING} "
                "levels allowed"
            )
        raise error


def _brace_fault(shielded: str, at: int) -> str:
    """What is wrong with the ``{a|b}`` choices of ``shielded`` (``protect``'s: escaped
    braces are no syntax), which the parser gave up on at character ``at``, in plain words:
    the parser's own message speaks of its grammar. Escaped braces are shielded."""
    opened: list[int] = []
    stray: int | None = None  # the first ``}`` with no ``{`` before it
    for index, char in enumerate(shielded):
        if char == "{":
            opened.append(index)
        elif char == "}" and opened:
            opened.pop()
        elif char == "}" and stray is None:
            stray = index
    if opened:
        return f"a '{{' has no matching '}}' (at {_near(shielded, opened[0])})"
    if stray is not None:
        return f"a '}}' has no '{{' before it (at {_near(shielded, stray)})"
    return (
        f"the {{ }} choices cannot be read (at {_near(shielded, at)}); a choice is written "
        "{a|b}, and a brace meant as text \\{ or \\}"
    )


def _near(shielded: str, at: int) -> str:
    """The text from character ``at`` on, quoted: where a fault is (in a refusal or in a
    note under a picture, whose markdown is escaped: no backticks)."""
    return repr(cut(_unshield(shielded[at:])))


def protect(text: str, *, keep_wildcards: bool = True) -> str:
    """Hide from dynamicprompts every character that is not its syntax (see module doc)."""
    out: list[str] = []
    open_brackets: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        innermost = open_brackets[-1] if open_brackets else ""
        if char == "\\" and position + 1 < len(text) and text[position + 1] in _SPECIAL:
            out.append(char + _shield(text[position + 1]))
            position += 2
            continue
        if char == "_" and text.startswith("__", position) and keep_wildcards:
            end = _wildcard_end(text, position)
            if end > 0:
                out.append(text[position:end])
                position = end
                continue
        if char == "$" and innermost == "{" and text.startswith("$$", position):
            out.append("$$")
            position += 2
            continue
        if char in "{[":
            open_brackets.append(char)
        elif char in "}]" and innermost == {"}": "{", "]": "["}[char]:
            open_brackets.pop()
        protected = char in "#$%_" or (char == "|" and innermost == "[")
        out.append(_shield(char) if protected else char)
        position += 1
    return "".join(out)


log = logging.getLogger(__name__)


class _LeftOut(Exception):
    """A wildcard file is left out; the message says why, for the log and ``easel doctor``."""


class _NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no types
    """``yaml.safe_load``'s reading (dynamicprompts'), refusing aliases. Pure Python, as
    dynamicprompts reads: libyaml's composer recurses in C and crashed the process on a
    200 KB file of nested brackets, where Python's raises ``RecursionError``."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            alias = self.peek_event()
            raise _LeftOut(
                f"it uses the YAML alias *{alias.anchor}, which wildcard files may not "
                "(write the values out)"
            )
        return super().compose_node(parent, index)


class _Stamp(NamedTuple):
    """A file's identity, size and times, as ``os.fstat`` gives them."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def _file_text(path: Path, errors: str = "strict") -> tuple[str, _Stamp | None]:
    """A wildcard file's text, its line ends read as Python's text mode reads them, and its
    stamp when the read is whole: the same before and after it, and the read as long as that
    size (None: the file changed meanwhile). Every read of one is made here."""
    with path.open("rb") as file:
        before = os.fstat(file.fileno())
        data = file.read(MAX_WILDCARD_FILE_BYTES + 1)
        after = os.fstat(file.fileno())
    stamp = _Stamp(after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns)
    whole = (
        stamp == (before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns)
        and len(data) == after.st_size
    )
    text = data.decode("utf-8", errors).replace("\r\n", "\n").replace("\r", "\n")
    return text, stamp if whole else None


class _DrawnUnsettled(threading.local):
    """Whether this thread drew from a text file's unsettled read (``_TextFile``) since it
    last cleared this: what it builds from it is not kept (``_Manager._values_read``). Per
    thread: another thread's look-up may settle the same file meanwhile."""

    drawn = False


_drawn_unsettled = _DrawnUnsettled()


class _TextFile(WildcardCollection):
    """A ``.txt`` wildcard file, one value a line (``#`` comments), read at its first use by
    one thread (its own lock: a big file holds up only the look-ups that read it), as
    dynamicprompts reads one; one that cannot be read has no values (an unknown wildcard),
    its reason kept (``problem``) and logged.

    A read is kept only once it is settled: whole (``_file_text``), and the file unchanged
    for ``LISTING_SETTLED_NS`` before it: its modification time that old, or, for one this
    machine's clock puts in the future (clock skew, a restored backup), its stamp seen the
    same that long on this process's own clock. An editor or ``echo > file`` truncates the
    file, then writes, and a read in between sees it empty or half written with no later
    change to its stat to tell. Until then the values of its last settled read, an earlier
    version's (``settled_before``), are drawn from, and the file is read again at the next
    look-up (``_drawn_unsettled``: nothing built on it is kept). A file never read settled,
    new, gives its read as it is."""

    def __init__(self, path: Path, settled_before: list[str] | None = None) -> None:
        self.path = path
        self.settled_before = settled_before
        self.problem: str | None = None
        self._values: list[str] | None = None
        self._lock = threading.Lock()
        # The stamp the last read found, and when (``time.monotonic_ns``) it was first found.
        self._stamp: _Stamp | None = None
        self._stamp_seen_ns = 0

    def get_values(self) -> list[str]:
        values = self._values
        if values is None:
            with _held(self._lock):
                values = self._values
                if values is None:
                    values, settled = self._read()
                    if settled:
                        self._values = values
                    else:
                        _drawn_unsettled.drawn = True
                        if self.settled_before is not None:
                            values = self.settled_before
        return values

    def settled_values(self) -> list[str] | None:
        """The values of this file's last settled read, this version's or an earlier one's."""
        return self._values if self._values is not None else self.settled_before

    def _read(self) -> tuple[list[str], bool]:
        """The file's values, and whether the read is settled."""
        try:
            text, stamp = _file_text(self.path, errors="ignore")
        except OSError as error:
            self.problem = f"it cannot be read: {error.strerror or error}"
            log.warning("Wildcard file %s left out: %s", self.path, self.problem)
            # Not read again until the listing shows it changed.
            return [], True
        seen_ns = time.monotonic_ns()
        if stamp is None or stamp != self._stamp:
            self._stamp, self._stamp_seen_ns = stamp, seen_ns
        settled = stamp is not None and (
            time.time_ns() - stamp.mtime_ns >= LISTING_SETTLED_NS
            or seen_ns - self._stamp_seen_ns >= LISTING_SETTLED_NS
        )
        return [line.strip() for line in text.split("\n") if not is_empty_line(line)], settled


def _structured_names(path: Path, prefix: str) -> list[tuple[str, WildcardCollection]]:
    """The wildcards of a ``.yaml`` or ``.json`` file as dynamicprompts names them, each
    after ``prefix`` (its folder's); raises ``_LeftOut``."""
    try:
        text, _ = _file_text(path)
        data = (
            yaml.load(text, Loader=_NoAliasLoader) if path.suffix == ".yaml" else json.loads(text)
        )
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise _LeftOut(f"it cannot be read: {reason}") from None
    if isinstance(data, list):  # a list of strings is one wildcard, the file's
        entries = [entry for entry in data if isinstance(entry, str)]
        return (
            [(prefix + path.stem, ListWildcardCollection(entries, source=path))] if entries else []
        )
    if not isinstance(data, dict):
        return []
    named: list[tuple[str, WildcardCollection]] = []
    for name, collection in _parse_structured_file_dict(data, file_path=path):
        if len(named) == MAX_WILDCARD_FILE_NAMES:
            raise _LeftOut(f"it holds more than the limit of {MAX_WILDCARD_FILE_NAMES:,} wildcards")
        named.append((prefix + name, collection))
    return named


# Each wildcard file listed: its size and its modification and change times (ns).
_Listing = dict[Path, tuple[int, int, int]]


def _listed(root: Path) -> _Listing:
    """The wildcard files under ``root`` as dynamicprompts walks it (links followed, folders
    named ``.*`` skipped; a folder linked under a second name is listed under both), regular
    files only (a FIFO would block its reader), a link back to a folder above it skipped (a
    link loop ends)."""
    listing: _Listing = {}
    # Each folder to list with the identities of the folders above it (``root`` included).
    folders: list[tuple[str, frozenset[tuple[int, int]]]] = [(str(root), frozenset())]
    while folders:
        folder, above = folders.pop()
        try:
            identity = Path(folder).stat()
            if (identity.st_dev, identity.st_ino) in above:
                continue
            above = above | {(identity.st_dev, identity.st_ino)}
            with os.scandir(folder) as scanned:
                entries = list(scanned)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir():
                    if not entry.name.startswith("."):
                        folders.append((entry.path, above))
                elif entry.name.endswith(_WILDCARD_SUFFIXES):
                    found = entry.stat()
                    if stat.S_ISREG(found.st_mode):
                        listing[Path(entry.path)] = (
                            found.st_size,
                            found.st_mtime_ns,
                            found.st_ctime_ns,
                        )
            except OSError:
                continue
    return listing


class _FileRead(NamedTuple):
    """One version of a wildcard file (its size and times, as listed), as read: its wildcards
    (a text file's still unread), or why it is left out."""

    version: tuple[int, int, int]
    named: list[tuple[str, WildcardCollection]]
    left_out: str | None = None


def _file_read(
    root: Path, path: Path, version: tuple[int, int, int], earlier: _FileRead | None
) -> _FileRead:
    """``path`` read (a file under ``root``; ``earlier``: its version before, a text file's
    settled values drawn from while it is not settled again); a file left out is logged."""
    name = path.relative_to(root).with_suffix("").as_posix()
    try:
        if version[0] > MAX_WILDCARD_FILE_BYTES:
            raise _LeftOut(
                f"it is {version[0]:,} bytes, over the limit of {MAX_WILDCARD_FILE_BYTES:,}"
            )
        if path.suffix == ".txt":
            before = [c for _, c in earlier.named if isinstance(c, _TextFile)] if earlier else []
            settled_before = before[0].settled_values() if before else None
            return _FileRead(version, [(name, _TextFile(path, settled_before))])
        folder = name.rpartition("/")[0]
        return _FileRead(version, _structured_names(path, f"{folder}/" if folder else ""))
    except _LeftOut as error:
        log.warning("Wildcard file %s left out: %s", path, error)
        return _FileRead(version, [], str(error))


def _files_read(
    root: Path, listing: _Listing, earlier: dict[Path, _FileRead]
) -> dict[Path, _FileRead]:
    """Each file ``listing`` names, in path order, read: one whose version is the one read
    ``earlier`` is not read again (an edit, an upload or a sync of one file in a big pack
    parses only that file)."""
    reads: dict[Path, _FileRead] = {}
    for path, version in sorted(listing.items()):
        read = earlier.get(path)
        reads[path] = (
            read
            if read is not None and read.version == version
            else _file_read(root, path, version, read)
        )
    return reads


@contextlib.contextmanager
def _held(lock: threading.Lock) -> Iterator[None]:
    """``lock``, waited for between checkpoints: a plan its member stopped waiting for stops
    waiting for the lock too."""
    while not lock.acquire(timeout=0.05):
        checkpoint()
    try:
        yield
    finally:
        lock.release()


def _named_as_typed(reads: dict[Path, _FileRead]) -> dict[str, WildcardCollection]:
    """Each wildcard of ``reads`` (in path order) by its name ``as_typed``. Where two names
    differ only so (``café.txt`` twice, in NFC and NFD), the first file's wildcard keeps it,
    the other is left out and logged; one name read twice (``a.txt``, ``a.yaml``) is the
    last one's, as dynamicprompts keeps it."""
    named: dict[str, WildcardCollection] = {}
    spelt: dict[str, tuple[str, Path]] = {}  # each name as the first file spells it
    for path, read in reads.items():
        for name, collection in read.named:
            typed = as_typed(name)
            first, first_path = spelt.setdefault(typed, (name, path))
            if first != name:
                log.warning(
                    "Wildcard __%s__ of %s left out: its name differs from that of %s only "
                    "in its Unicode form (NFC, NFD), and that one is read as __%s__",
                    name,
                    path,
                    first_path,
                    typed,
                )
                continue
            named[typed] = collection
    return named


class _Manager(WildcardManager):
    """One version of the wildcard folder, as read (``reads``: each file's, ``_files_read``),
    shared by the plans' threads. Raises on unknown names and protects web UI syntax inside
    wildcard values.

    Each value is protected once, and the values of each set of files a name reads are put
    together once, by one thread (that set's lock; the others wait, or find them): a glob such
    as ``__*__`` reads every file it matches, and doing that work again at every look-up (or
    for ``__**__``, ``__***__``...) let one prompt cost minutes of CPU with a big wildcard
    pack. A look-up of other files does not wait for it. The values put together by the
    version before (``earlier``) from files this one still holds are kept, and so are the
    values it protected."""

    def __init__(
        self,
        path: Path | None,
        reads: dict[Path, _FileRead] | None = None,
        earlier: _Manager | None = None,
    ) -> None:
        super().__init__(path)
        reads = reads or {}
        self._read = WildcardTree.from_map(_named_as_typed(reads))
        self.left_out = {path: read.left_out for path, read in reads.items() if read.left_out}
        self._lock = threading.Lock()  # held only to find or add a set of files' lock
        self._locks: dict[tuple[int, ...], threading.Lock] = {}
        self._protected: dict[str, str] = {}
        # By the identities of the files read: valid while their collections live (this
        # tree's, or the same objects in the version before: a file not read again).
        self._values: dict[tuple[int, ...], WildcardValues] = {}
        if earlier is not None:
            held = {id(collection) for collection in self._read.map.values()}
            self._values = {
                files: values for files, values in earlier._values.items() if held.issuperset(files)
            }
            # Keyed by the value's text: a plan stopped halfway through a big file leaves
            # the next version less to do.
            if len(earlier._protected) < _KEPT_PROTECTED:
                self._protected = earlier._protected

    @property
    def tree(self) -> WildcardTree:
        return self._read

    def files_left_out(self) -> dict[Path, str]:
        """``WildcardLibrary.files_left_out``."""
        text_files = [c for c in self._read.map.values() if isinstance(c, _TextFile)]
        for text_file in text_files:
            text_file.get_values()
        unreadable = {c.path: c.problem for c in text_files if c.problem is not None}
        return dict(sorted({**self.left_out, **unreadable}.items()))

    def get_values(self, wildcard: str) -> WildcardValues:
        wildcard = as_typed(wildcard)
        if ".." in wildcard:
            # Outside the folder: dynamicprompts refuses it too, but logs the member's text
            # with a traceback each time.
            raise UnknownWildcardError(wildcard, [], sorted(self.get_collection_names()))
        pattern, found = self._read_as(wildcard)
        files = tuple(map(id, found))
        values = self._values.get(files)
        if values is None and found:
            with self._lock:
                if len(self._locks) >= _KEPT_NAMES:
                    self._locks.clear()
                lock = self._locks.setdefault(files, threading.Lock())
            with _held(lock):
                values = self._values.get(files) or self._values_read(wildcard, pattern, found)
        if not values:  # the "did you mean" outside any lock: it matches every name
            names = sorted(self.get_collection_names())
            raise UnknownWildcardError(
                wildcard, difflib.get_close_matches(wildcard, names, n=3, cutoff=0.5), names
            )
        return values

    def _values_read(
        self, wildcard: str, pattern: str, found: list[WildcardCollection]
    ) -> WildcardValues:
        """The values of the collections ``found``, read as ``pattern`` (the name typed:
        ``wildcard``), protected and kept (none, or drawn from a text file not settled:
        ``_TextFile``, they are not kept, and read again at the next look-up)."""
        _drawn_unsettled.drawn = False
        values = super().get_values(pattern)
        provisional = _drawn_unsettled.drawn
        if provisional:
            self._values_cache.pop(pattern, None)  # dynamicprompts' own keeping of them
        if not values:
            return values
        protected = WildcardValues.from_items(
            WildcardItem(self._protect(str(item), wildcard), getattr(item, "weight", 1.0))
            for item in values.items
        )
        if provisional:
            return protected
        if len(self._values) >= _KEPT_NAMES:  # as dynamicprompts bounds its own cache
            self._values.clear()
        self._values[tuple(map(id, found))] = protected
        return protected

    def _read_as(self, wildcard: str) -> tuple[str, list[WildcardCollection]]:
        """The pattern ``wildcard`` is read as and the collections it reads, as dynamicprompts
        picks them: a name matching nothing is looked for in every folder (``**/name``, asked
        directly: dynamicprompts would log the name, words of a member's prompt)."""
        found = list(self.match_collections(wildcard))
        if not found and not wildcard.startswith("**"):
            wildcard = f"**/{wildcard}"
            found = list(self.match_collections(wildcard))
        return wildcard, found

    def files_of(self, wildcard: str) -> list[Path]:
        """The files (relative to the folder) ``wildcard`` reads, from the tree already
        listed: no file is read for it."""
        wildcard = as_typed(wildcard)
        if self.path is None or ".." in wildcard:
            return []
        files = dict.fromkeys(map(_file_of, self._read_as(wildcard)[1]))
        return sorted(file.relative_to(self.path) for file in files if file is not None)

    def _protect(self, value: str, wildcard: str) -> str:
        protected = self._protected.get(value)
        if protected is None:
            checkpoint()  # a plan stopped while it protects a big file lets go of its lock
            protected = protect(value)
            _check_brace_nesting(protected, f"a value of __{wildcard}__", wildcard)
            self._protected[value] = protected
        return protected


def _file_of(collection: WildcardCollection) -> Path | None:
    """The file a collection was read from: a text file's own, a YAML or JSON key's
    ``source`` (its file, its key); None for one built otherwise."""
    if isinstance(collection, ListWildcardCollection):
        source = collection.source  # a whole file's list: its file
        source = source[0] if isinstance(source, tuple) else source
        return source if isinstance(source, Path) else None
    return collection.path if isinstance(collection, _TextFile) else None


class DrawnValue(NamedTuple):
    """A wildcard value drawn: the wildcard's name as read (``__name__``, its choices drawn)
    and the value's text, its own wildcards and choices drawn too."""

    wildcard: str
    text: str


class _Budget:
    """What one expansion may still produce: wildcard look-ups and characters of values;
    ``drawn``: where each value drawn is noted, shielded, with the wildcard it was drawn
    from (None: nowhere)."""

    def __init__(self, drawn: list[DrawnValue] | None = None) -> None:
        self.expansions = 0
        self.chars = 0
        self.drawn = drawn

    def spend(self, value: str, wildcard: str, *, noted: bool = True) -> None:
        """Counts ``value`` (as ``wildcard``'s file holds it); ``noted`` False: its text is
        noted as drawn (``noting``), its own choices drawn, not here."""
        checkpoint()
        self.expansions += 1
        self.chars += len(value)
        if noted and self.drawn is not None:
            self.drawn.append(DrawnValue(wildcard, value))
        if self.expansions > MAX_WILDCARD_EXPANSIONS:
            raise PromptError(
                f"the prompt's wildcards expand more than {MAX_WILDCARD_EXPANSIONS} times; "
                "use fewer wildcards, or wildcards that include fewer others"
            )
        if self.chars > MAX_EXPANDED_CHARS:
            raise _too_long()

    def noting(self, results: ResultGen, wildcard: str) -> ResultGen:
        """``results``, the text of each noted as drawn from ``wildcard`` (not counted
        again)."""
        for result in results:
            if self.drawn is not None:
                self.drawn.append(DrawnValue(wildcard, result.text))
            yield result


def _too_long() -> PromptError:
    return PromptError(
        f"the prompt expands to more than {MAX_EXPANDED_CHARS:,} characters after wildcards "
        "and {a|b} choices; use shorter wildcard values or fewer wildcards"
    )


@dataclass(frozen=True)
class _Context(SamplingContext):
    wildcard_chain: tuple[str, ...] = ()
    budget: _Budget = dataclasses.field(default_factory=_Budget)

    def get_sampler_and_context(self, command: Command) -> tuple[Sampler, SamplingContext]:
        # One sampler for every method (``WildcardLibrary.context``); dynamicprompts would
        # also warn about {!a|b} here, printing the member's prompt to stderr.
        return self.default_sampler, self


def _inside(name: str, context: SamplingContext) -> SamplingContext:
    """The context for reading the values of the wildcard ``name``, one wildcard deeper;
    raises ``WildcardRecursionError`` past ``MAX_WILDCARD_DEPTH``."""
    chain = getattr(context, "wildcard_chain", ())
    chain = (*chain, name)
    if len(chain) > MAX_WILDCARD_DEPTH:
        earlier = [i for i, name in enumerate(chain[:-1]) if name == chain[-1]]
        loop = chain[earlier[-1] :] if earlier else chain  # one turn of the loop
        raise WildcardRecursionError(loop, MAX_WILDCARD_DEPTH)
    return dataclasses.replace(context, wildcard_chain=chain)  # type: ignore[call-arg]


def _name_drawn(command: WildcardCommand, context: SamplingContext) -> str:
    """The name ``command`` reads, its own choices drawn (``__{a|b}__``)."""
    return next(iter(context.sample_prompts(command.wildcard, 1))).text


@contextlib.contextmanager
def _named_in(inner: SamplingContext) -> Iterator[None]:
    """An unknown wildcard read in ``inner`` is blamed on the wildcard whose value named it
    (``UnknownWildcardError.named_in``), if it is no name the prompt typed; the innermost
    one that knows says."""
    chain: tuple[str, ...] = getattr(inner, "wildcard_chain", ())
    try:
        yield
    except UnknownWildcardError as error:
        if error.named_in is None and len(chain) > 1:
            error.named_in = chain[-2]
        raise
    except ParseBaseException as error:  # a value of the innermost wildcard
        raise _value_unread(chain[-1], error) from error


def _parsed_in(value: str, inner: SamplingContext) -> Command:
    """``value``, drawn from the innermost wildcard of ``inner``, parsed: one whose ``{ }``
    choices do not parse is blamed on that wildcard's file (``_named_in``), not the prompt."""
    with _named_in(inner):
        return _parsed_value(value, inner.parser_config)


def _value_unread(wildcard: str, error: ParseBaseException) -> PromptError:
    """A value of ``wildcard`` ("": not known) whose ``{ }`` choices the parser gave up on:
    its file's fault. The operator's message quotes the value (the parser's ``line``)."""
    fault = _brace_fault(error.pstr, error.loc)
    name = f"__{wildcard}__" if wildcard else "a wildcard"
    refusal = PromptError(f"a value of {name} cannot be read: {fault}; mend its file")
    refusal.in_wildcard = wildcard
    refusal.file_fault = f"in a value, {fault}"
    return refusal


class _DepthLimitedSampler(RandomSampler):
    def _get_wildcard(self, command: WildcardCommand, context: SamplingContext) -> ResultGen:
        # The name drawn once here (as dynamicprompts would, from the same seed) and given to
        # it as drawn, so that each value drawn is noted with the wildcard it came from.
        name = _name_drawn(command, context)
        inner = _inside(name, context)
        budget: _Budget = inner.budget  # type: ignore[attr-defined]
        with _named_in(inner):
            for result in super()._get_wildcard(dataclasses.replace(command, wildcard=name), inner):
                budget.spend(result.text, name)
                yield result

    def _get_variant(self, command: VariantCommand, context: SamplingContext) -> ResultGen:
        """``{N$$__name__}`` draws as dynamicprompts does (the same values from the same
        seed), but parses only the values drawn, each counted in the budget: dynamicprompts
        parsed every value of the wildcard first (seconds for a big file, at each use) and
        counted none, nor the wildcard in the chain (a value using its own wildcard this way
        recursed until Python's stack overflowed)."""
        wildcard = command.values[0] if len(command.values) == 1 else None
        if not isinstance(wildcard, WildcardCommand):
            yield from super()._get_variant(command, context)
            return
        name = _name_drawn(wildcard, context)
        inner = _inside(name, context)
        budget: _Budget = inner.budget  # type: ignore[attr-defined]
        with _named_in(inner):
            values = inner.wildcard_manager.get_values(name)
        options = list(values.iterate_string_values_weighted())
        least = min(command.min_bound, len(values), len(options))
        most = min(command.max_bound, len(values), len(options))
        if len(options) < 2:  # dynamicprompts' variant of one value: no draw
            for option in options:
                budget.spend(option, name, noted=False)
            # Back through this override, as dynamicprompts' own sampler recurses through
            # ``self``: a value that is itself ``__other__`` is ``{N$$__other__}``, drawn here
            # one wildcard deeper in the chain (so a file whose one value names itself is
            # refused at MAX_WILDCARD_DEPTH); any other value goes to the base sampler.
            only = VariantCommand(
                [VariantOption(_parsed_in(option, inner)) for option in options],
                least,
                most,
                command.separator,
                command.sampling_method,
            )
            yield from budget.noting(self._get_variant(only, inner), name)
            return
        while True:
            remaining, drawn = list(options), []
            for _ in range(min(most, inner.rand.randint(least, most))):
                # choose_without_replacement at equal weights: an index floor(random() * n)
                # (random.choices), then the first equal value goes.
                value = remaining[inner.rand.choices(range(len(remaining)))[0]]
                remaining.remove(value)
                budget.spend(value, name, noted=False)
                drawn.append(value)
            # Each value's own text noted as drawn, its {a|b} choices drawn as ``__name__``
            # notes them, and not the joined text: the separator is the member's.
            generators = [
                budget.noting(
                    inner.generator_from_command(_parsed_in(value, inner)),
                    name,
                )
                for value in drawn
            ]
            if generators:
                yield rotate_and_join(generators, separator=command.separator)
            else:
                yield SamplingResult(text="")


class _SharedFolder:
    """One wildcard folder, read once for each version of it and shared by every library of
    it (the plans' threads): listed again at each library's first use (each file's size and
    times: 5,000 files in 25-35 ms, hundreds in a few ms), read again only when the listing
    changed, by one thread while the others go on with the version before (at the first
    read, they wait for it), and then only its files whose size or times changed. Each file
    left out is logged once for each version of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._read: _Manager | None = None
        self._listing: _Listing | None = None
        self._reads: dict[Path, _FileRead] = {}  # each file of the version read

    def current(self) -> _Manager:
        read = self._read
        if read is not None and not self._lock.acquire(blocking=False):
            return read  # another thread lists it now
        if read is None:
            with _held(self._lock):
                return self._listed_again()
        try:
            return self._listed_again()
        finally:
            self._lock.release()

    def _listed_again(self) -> _Manager:
        """The folder as it is now (called holding ``_lock``), read again if it changed."""
        listing = _listed(self.root)
        if self._read is None or listing != self._listing:
            self._reads = _files_read(self.root, listing, self._reads)
            self._read = _Manager(self.root, self._reads, self._read)
            self._listing = listing
        return self._read


_FOLDERS: dict[str, _SharedFolder] = {}
_FOLDERS_LOCK = threading.Lock()
_NO_FILES = _Manager(None)


def _shared_folder(root: Path) -> _SharedFolder:
    key = str(root.absolute())
    with _FOLDERS_LOCK:
        folder = _FOLDERS.get(key)
        if folder is None:
            if len(_FOLDERS) >= _KEPT_FOLDERS:
                del _FOLDERS[next(iter(_FOLDERS))]
            folder = _FOLDERS[key] = _SharedFolder(root)
        return folder


class WildcardLibrary:
    """The wildcard folder (``None``: no folder), as it is at the library's first use, kept
    for its life (a plan draws from one version of it): read once for every library of it
    while it does not change (``_SharedFolder``), text files at their first use."""

    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root is not None else None
        self._version: _Manager | None = None
        self._values_drawn: list[DrawnValue] | None = None  # where each value drawn is noted

    @property
    def _manager(self) -> _Manager:
        if self._version is None:
            self._version = _NO_FILES if self.root is None else _shared_folder(self.root).current()
        return self._version

    def names(self) -> list[str]:
        return sorted(self._manager.get_collection_names())

    def files_left_out(self) -> dict[Path, str]:
        """The wildcard files left out, each with why (``easel doctor``): those past a bound
        (``MAX_WILDCARD_FILE_BYTES``...), and the text files that cannot be read (each
        read for it)."""
        return self._manager.files_left_out()

    def files_of(self, wildcard: str) -> list[Path]:
        """The files (relative to the folder) the wildcard ``wildcard`` reads: those to
        blame for its values."""
        return self._manager.files_of(wildcard)

    def context(self, seed: int) -> SamplingContext:
        # Each picture draws one text from its own seed: there is no batch for ``{@a|b}`` to
        # cycle through nor ``{!a|b}`` to enumerate, and dynamicprompts' cyclical and
        # combinatorial samplers parse every value of a wildcard first and count nothing in
        # the budget, so every method draws like ``{~a|b}``.
        sampler = _DepthLimitedSampler()
        return _Context(
            default_sampling_method=SamplingMethod.RANDOM,
            wildcard_manager=self._manager,
            samplers=dict.fromkeys(SamplingMethod, sampler),
            rand=Random(seed),
            budget=_Budget(self._values_drawn),
        )


_NO_FOLDER = WildcardLibrary(None)


@dataclass(frozen=True)
class Expansion:
    """One image's prompt: the template as typed and the text after expansion."""

    template: str
    text: str
    seed: int
    warnings: tuple[str, ...] = ()


def _parse(text: str, parser_config: ParserConfig = default_parser_config) -> Command:
    """dynamicprompts' parse, the slow part (pyparsing), kept (``_parsed_prompt``,
    ``_parsed_value``): every picture of a request, and every pass that plans it again,
    samples the same command, and a wildcard's values are drawn again and again (each draw is
    still counted in the budget). Its commands are frozen: one is shared by every use."""
    return parse_prompt(text, parser_config=parser_config)


_parsed_prompt = functools.lru_cache(maxsize=_KEPT_PROMPTS)(_parse)
_parsed_value = functools.lru_cache(maxsize=_KEPT_VALUES)(_parse)


def draws_by_seed(*templates: str) -> bool:
    """Whether any of ``templates`` may expand to other text at another seed (wildcards,
    ``{a|b}``)."""
    return any("{" in template or "__" in template for template in templates)


def expand_prompt(
    template: str, seed: int, library: WildcardLibrary | None = None, *, count: int = 1
) -> list[Expansion]:
    """Expand ``template`` for ``count`` images, image ``i`` seeded with ``seed + i``
    (``picture_seed``), as a batch without a variation; the engine and admission expand each
    picture alone, at the seed ``picture_seeds`` gives it (a varied batch keeps one seed).

    Raises ``UnknownWildcardError`` (with the closest names), ``WildcardRecursionError``,
    ``NestingError`` (braces deeper than ``MAX_BRACE_NESTING``) and ``PromptError`` past the
    expansion limits (``MAX_EXPANDED_CHARS``, ``MAX_WILDCARD_EXPANSIONS``). Malformed braces
    are not an error: the text is used as typed, with a warning. Without a
    library (or one with no folder), ``__name__`` stays as typed (with a warning) and ``{a|b}``
    still expands. A ``RecordedDraws`` keeps each expansion; ``PlannedDraws`` gives them back.
    """
    seeds = [picture_seed(seed, index) for index in range(count)]
    if not draws_by_seed(template):
        return [Expansion(template, template, image_seed) for image_seed in seeds]
    if isinstance(library, PlannedDraws):
        return [library.expansion(template, image_seed) for image_seed in seeds]
    expansions = _drawn(template, seeds, library)
    if isinstance(library, RecordedDraws):
        for expansion in expansions:
            library.note(expansion)
    return expansions


def _drawn(template: str, seeds: list[int], library: WildcardLibrary | None) -> list[Expansion]:
    folder = library if library is not None and library.root is not None else None
    has_folder = folder is not None
    warnings: tuple[str, ...] = ()
    if not has_folder and "__" in template:
        warnings = (NO_FOLDER,)
    shielded = protect(template, keep_wildcards=has_folder)
    _check_brace_nesting(shielded, "the prompt")
    try:
        command = _parsed_prompt(shielded)
    except ParseBaseException as error:
        log.debug("prompt's { } choices not parsed: %s", error)  # the parser's own words
        warning = f"{_brace_fault(shielded, error.loc)}; the text is used as typed"
        return [Expansion(template, template, image_seed, (warning,)) for image_seed in seeds]
    expansions = []
    for image_seed in seeds:
        context = (folder or _NO_FOLDER).context(image_seed)
        try:
            result = next(iter(context.sample_prompts(command, 1)), None)
        except ParseBaseException as error:
            # The prompt parsed: a value drawn where no wildcard is known to have drawn it
            # (each of ours is parsed in its wildcard's ``_named_in``).
            raise _value_unread("", error) from error
        text = _unshield(result.text) if result is not None else ""
        if len(text) > MAX_EXPANDED_CHARS:
            raise _too_long()
        expansions.append(Expansion(template, text, image_seed, warnings))
    return expansions


# The request option holding each planned prompt's expansion as the bot drew it (from its
# wildcards folder, or from none): ``{"texts": [text, ...], "draws": [[template, seed, text,
# [warning, ...]], ...]}``, each string once in ``texts`` and the draws naming them by index,
# so a long prompt drawn for many pictures costs its length once (``RecordedDraws.option``).
WILDCARD_DRAWS_OPTION = "wildcard_draws"
NOT_PLANNED = (
    "this prompt was not planned when the job was queued: its __name__ wildcards are left as typed"
)
_DRAWS_SHAPE = (
    f'{WILDCARD_DRAWS_OPTION} must be {{"texts": [text, ...], "draws": [[template, seed, '
    f"text, [warning, ...]], ...]}} with indices into texts and texts of at most "
    f"{MAX_EXPANDED_CHARS:,} characters"
)


class RecordedDraws(WildcardLibrary):
    """The wildcard folder (``None``: none), keeping every expansion drawn with it, warnings
    included (where a job is planned)."""

    def __init__(self, root: Path | str | None) -> None:
        super().__init__(root)
        self._drawn: dict[tuple[str, int], Expansion] = {}
        self._values_drawn = []

    def note(self, expansion: Expansion) -> None:
        self._drawn[(expansion.template, expansion.seed)] = expansion

    def values_drawn(self) -> list[DrawnValue]:
        """Each wildcard value drawn, its own wildcards and choices drawn too (only the text
        the folder gave, not what the prompt typed around it), innermost first: a value
        drawn inside another is noted before the one holding it."""
        return [
            DrawnValue(value.wildcard, _unshield(value.text)) for value in self._values_drawn or ()
        ]

    def option(self) -> dict[str, list[Any]]:
        """What was drawn, as ``WILDCARD_DRAWS_OPTION`` holds it."""
        indices: dict[str, int] = {}

        def index(text: str) -> int:
            return indices.setdefault(text, len(indices))

        draws = [
            [
                index(drawn.template),
                drawn.seed,
                index(drawn.text),
                [index(w) for w in drawn.warnings],
            ]
            for drawn in self._drawn.values()
        ]
        return {"texts": list(indices), "draws": draws}


class PlannedDraws(WildcardLibrary):
    """The expansions a job's prompts were drawn as where it was planned and checked (the
    bot, with its wildcards folder or none), by template and seed; where it renders (a worker,
    whose folder may be empty or other), those are used and no folder is read. A template not
    planned keeps its ``__name__`` as typed, with a warning; its ``{a|b}`` still draws."""

    def __init__(self, drawn: dict[tuple[str, int], Expansion]) -> None:
        super().__init__(None)
        self.drawn = drawn

    @classmethod
    def of(cls, options: dict[str, object]) -> PlannedDraws | None:
        """The draws a request's options carry (``None``: a job queued before the bot sent
        them, drawn from the folder where it renders, as then). Raises ``PromptError`` on a
        malformed option."""
        option = options.get(WILDCARD_DRAWS_OPTION)
        if option is None:
            return None
        match option:
            case {"texts": list(texts), "draws": list(draws)} if all(
                isinstance(text, str) and len(text) <= MAX_EXPANDED_CHARS for text in texts
            ):
                pass
            case _:
                raise PromptError(_DRAWS_SHAPE)
        drawn: dict[tuple[str, int], Expansion] = {}
        for draw in draws:
            match draw:
                case [int(template), int(seed), int(text), list(warnings)] if all(
                    isinstance(i, int) and 0 <= i < len(texts) for i in (template, text, *warnings)
                ):
                    drawn[(texts[template], seed)] = Expansion(
                        texts[template], texts[text], seed, tuple(texts[i] for i in warnings)
                    )
                case _:
                    raise PromptError(f"{_DRAWS_SHAPE}; got the draw {str(draw)[:80]!r}")
        return cls(drawn)

    def expansion(self, template: str, seed: int) -> Expansion:
        drawn = self.drawn.get((template, seed))
        if drawn is not None:
            return drawn
        [typed] = expand_prompt(template, seed)
        warnings = tuple(warning for warning in typed.warnings if warning != NO_FOLDER)
        if "__" in template:
            warnings += (NOT_PLANNED,)
        return Expansion(template, typed.text, seed, warnings)
