"""Every write of the quota ledger and the limit overrides goes through
``bot.jobs.accounting``, which updates the quota memory in the same call (no caller can forget
to), and a commit is one SQL statement (a relax job's "reserved free" rule is in it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs import accounting
from bot.jobs.accounting import Member
from bot.policy.quota import QuotaLimits
from db import quotas as ledger
from inference.types import RenderRequest
from tests.queue.test_acknowledge_from_memory import counting_statements

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTING = ROOT / "bot" / "jobs" / "accounting.py"
WRITES = re.compile(r"\b(INSERT INTO|UPDATE|DELETE FROM) quota_(ledger|limits)\b")
GUILD, MEMBER = 100, 2


def _functions(path: Path) -> dict[str, ast.AsyncFunctionDef | ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _calls(function: ast.AST) -> set[str]:
    """The ``module.function`` names a function calls (as written: ``quotas.set_limits``)."""
    return {
        f"{node.func.value.id}.{node.func.attr}"
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
    }


def ledger_writers() -> set[str]:
    """``db`` functions that write the ledger or the limits, directly (their SQL) or through
    one another, as ``module.function``: found, not listed, so a new one is covered too."""
    functions = {
        f"{path.stem}.{name}": node
        for path in sorted((ROOT / "db").glob("*.py"))
        for name, node in _functions(path).items()
    }
    writers = {name for name, node in functions.items() if WRITES.search(ast.unparse(node))}
    while True:
        more = {name for name, node in functions.items() if _calls(node) & writers}
        if more <= writers:
            return writers
        writers |= more


def test_the_writers_are_found() -> None:
    assert {
        "quotas.reserve",
        "quotas.commit",
        "quotas.refund",
        "quotas.set_limits",
        "quotas.anonymise_due",
        "quotas.prune_settled",
        "history.erase_user",  # /forget-me anonymises the member's rows
    } <= ledger_writers()


def test_nothing_but_accounting_writes_the_ledger() -> None:
    """A module of the bot or its cogs that called a writer itself would leave the quota
    memory (``refusal_for``) counting the old ledger; db functions may call one another."""
    names = {writer.split(".")[-1] for writer in ledger_writers()}
    offenders = []
    for path in sorted([*ROOT.glob("bot/**/*.py"), *ROOT.glob("cogs/**/*.py")]):
        if path == ACCOUNTING:
            continue
        tree = ast.parse(path.read_text())
        db_names = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("db")
            for alias in node.names
        }
        for node in ast.walk(tree):
            called = node.func if isinstance(node, ast.Call) else None
            if (
                isinstance(called, ast.Attribute)
                and called.attr in names
                and isinstance(called.value, ast.Name)
                and called.value.id in db_names
            ) or (isinstance(called, ast.Name) and called.id in names & db_names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("relax", [False, True])
async def test_a_commit_is_one_statement_and_a_relax_job_stays_free(
    conn: aiosqlite.Connection, relax: bool
) -> None:
    cat = RenderRequest("a cat", seed=1, steps=2)
    request = RenderRequest("a cat", seed=1, steps=2, options={"relax": True} if relax else {})
    member, one_a_day = Member(MEMBER, None), QuotaLimits(images_per_day=1)  # in DMs
    now = 1_000_000.0
    assert await accounting.refusal_for(conn, member, cat, now, one_a_day) is None  # warm
    assert await accounting.admit(conn, "job", member, request, now, one_a_day) is None
    async with counting_statements(conn) as statements:
        await accounting.charge(conn, "job", gpu_seconds=3.0, images=1, now=now + 1)
    # Before: a SELECT of the reservation, then the INSERT (a write of no transaction also sets
    # the busy timeout around it: ``db.database.write``).
    assert len([statement for statement in statements if "quota_ledger" in statement]) == 1
    expected = ledger.Usage(0, 0.0) if relax else ledger.Usage(1, 3.0)
    assert await ledger.usage(conn, MEMBER, None, 0.0) == expected
    # Memory counts what the ledger charged: a relax job leaves today's one picture free.
    async with counting_statements(conn) as statements:
        refusal = await accounting.refusal_for(conn, member, cat, now + 2, one_a_day)
    if relax:
        assert refusal is None and statements == []
    else:
        assert refusal is not None
