"""The rule of ``db.database.write``: a statement that writes runs in a ``transaction`` block,
or through ``write`` / ``write_returning`` (which wait for another connection's write lock from
asyncio and never join another coroutine's transaction), unless its function only ever runs
inside its caller's transaction (``IN_CALLERS_TRANSACTION``, each with where). Checked on the
source of db/: a new raw ``conn.execute`` of INSERT, UPDATE, DELETE or REPLACE outside a
transaction fails here, naming its file, line and function."""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import db

DB_DIR = Path(db.__file__).parent

# What runs SQL on an aiosqlite connection.
_EXECUTES = frozenset(
    {"execute", "execute_fetchall", "execute_insert", "executemany", "executescript"}
)
# A statement that writes: its first word, after comments and a WITH clause if any. (Schema
# changes and PRAGMAs are the migrations' and ``connect``'s, not checked here.)
_WRITES = re.compile(
    r"^(?:\s|--[^\n]*(?:\n|$)|/\*.*?\*/)*(?:WITH\b.*?\)\s*)?(?:INSERT|UPDATE|DELETE|REPLACE)\b",
    re.S | re.I,
)

# Functions (module.function) whose raw writes are allowed: each only ever runs inside its
# caller's ``transaction`` (where), or is a helper of the rule itself.
IN_CALLERS_TRANSACTION = {
    "database.write": "the helper itself",
    "database.write_returning": "the helper itself",
    "dashboard._gallery": "runs the module's SELECTs (its sql is a parameter)",
    "broker_chores.owe": "JobEnds._owe_settle, in a job end's transaction; bot.restores",
    "erasures.count_batch": "db.history.erase_user's batch transaction",
    "erasures.count_anonymised": "db.history.erase_user's ledger transaction",
    "erasures.count_deferred": "db.history.erase_user's ledger transaction",
    "history._withdraw_deleted_posts": "the withdrawals' transactions in db.history",
    "history._withdraw_posted": "the withdrawals' transactions in db.history",
    "history._withdraw_with_made_from": "the withdrawals' transactions in db.history",
    "history._reached": "_withdraw_with_made_from (its temp tables)",
    "history._keep_withdrawn_pictures": "the withdrawals' transactions in db.history",
    "history._left_to_delete": "the withdrawals' and erase's transactions in db.history",
    "history._keep_posts_of_pruned": "db.history.prune_jobs's transaction",
    "jobs.insert_job": "Admission's transaction, with the quota reservation",
    "jobs.ask_cancel": "JobEnds.write_ask's transaction",
    "jobs.clear_cancel_ask": "Cancels._forget_ask's transaction",
    "jobs.mark_done": "JobEnds._record_done's transaction, with the charge",
    "jobs.mark_failed": "JobEnds.record_failure's transaction, with the refund",
    "jobs.fail_undeliverable": "Delivery's transaction, with the refund",
    "jobs.make_undelivered_private": "MemberSettings.update's transaction, with the save",
    "jobs.make_private_if_kept": "Admission's transaction, with the job's journaling",
    "presets.put": "bot.presets's save and share transactions",
    "presets.delete_member_presets": "db.history.erase_user's transaction",
    "presets.audit_server_change": "bot.presets's share and unshare transactions",
    "quotas.anonymise_user": "db.history.erase_user's ledger transaction",
    "quotas.defer_anonymising": "db.history.erase_user's ledger transaction",
    "refusals.delete_member_refusals": "db.history.erase_user's transaction",
    "run_mark.write": "bot.restores's transaction",
    "run_mark.end_unfinished_as_lost": "bot.restores's transaction, with the refunds",
    "user_settings.put": "MemberSettings.update's transaction",
}


# Nodes that open a scope of their own: their names are not the enclosing code's.
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _own_nodes(statements: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """The nodes of ``statements``, not those of a function or class defined in them."""
    stack = list(statements)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, _SCOPES))


def _bindings(statements: Iterable[ast.AST]) -> dict[str, ast.expr | None]:
    """Each name ``statements`` bind: to its expression where bound once, by ``x = ...`` or
    ``x: T = ...`` (SQL constants among them); None where bound otherwise or more than once (a
    loop's variable, a second assignment): unknown."""
    stores: Counter[str] = Counter()
    simple: dict[str, ast.expr] = {}
    for node in _own_nodes(statements):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stores[node.id] += 1
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            simple[target.id] = value
    return {name: simple.get(name) if count == 1 else None for name, count in stores.items()}


def _function_scope(
    function: ast.FunctionDef | ast.AsyncFunctionDef, enclosing: dict[str, ast.expr | None]
) -> dict[str, ast.expr | None]:
    """The names ``function`` reads: ``enclosing``'s, but those it binds itself (its
    parameters: unknown)."""
    parameters = {a.arg: None for a in ast.walk(function.args) if isinstance(a, ast.arg)}
    return {**enclosing, **_bindings(function.body), **parameters}


def _sql_text(node: ast.expr, bound: dict[str, ast.expr | None], depth: int = 0) -> str | None:
    """The SQL ``node`` spells as far as its start is known (an f-string's holes read as the
    names they hold where known, else ``{}``), or None: its start unknown (a parameter, a
    call, a loop's variable)."""
    if depth > 8:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = [
            part.value
            if isinstance(part, ast.Constant)
            else _sql_text(part.value, bound, depth + 1)
            for part in node.values
            if isinstance(part, ast.Constant | ast.FormattedValue)
        ]
        return None if not parts or parts[0] is None else "".join(p or "{}" for p in parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _sql_text(node.left, bound, depth + 1)
        right = _sql_text(node.right, bound, depth + 1)
        return None if left is None else left + (right or "{}")
    if isinstance(node, ast.Name) and (value := bound.get(node.id)) is not None:
        return _sql_text(value, bound, depth + 1)
    return None


def _opens_transaction(node: ast.AsyncWith) -> bool:
    return any(
        isinstance(item.context_expr, ast.Call)
        and ast.unparse(item.context_expr.func).rsplit(".", 1)[-1] == "transaction"
        for item in node.items
    )


def raw_writes(source: str, module: str) -> Iterator[tuple[str, int]]:
    """(module.function, line) of each statement ``source`` runs on a connection outside a
    ``transaction`` block that writes, or whose SQL cannot be read (it may write)."""
    tree = ast.parse(source)

    def visit(
        node: ast.AST, function: str, in_transaction: bool, bound: dict[str, ast.expr | None]
    ) -> Iterator[tuple[str, int]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function, in_transaction = node.name, False
            bound = _function_scope(node, bound)
        if isinstance(node, ast.AsyncWith) and _opens_transaction(node):
            in_transaction = True
        if (
            not in_transaction
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _EXECUTES
            and (sql_node := _sql_argument(node)) is not None
        ):
            sql = _sql_text(sql_node, bound)
            if sql is None or _WRITES.match(sql):
                yield f"{module}.{function}", node.lineno
        for child in ast.iter_child_nodes(node):
            yield from visit(child, function, in_transaction, bound)

    yield from visit(tree, "<module>", False, _bindings(tree.body))


def _sql_argument(call: ast.Call) -> ast.expr | None:
    """The SQL a call runs: its first argument, or its ``sql=``."""
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "sql"), None)


def _raw_writes_in_db() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(DB_DIR.glob("*.py")):
        for where, line in raw_writes(path.read_text("utf-8"), path.stem):
            found.append((where, line, path.name))
    return found


def test_every_write_in_db_goes_through_write_or_a_transaction() -> None:
    outside = [
        f"db/{file}:{line} {where}"
        for where, line, file in _raw_writes_in_db()
        if where not in IN_CALLERS_TRANSACTION
    ]
    assert outside == [], (
        "these write outside a transaction: use db.database.write / write_returning, or "
        "open a transaction (or, for a function only ever run in its caller's transaction, "
        "list it in IN_CALLERS_TRANSACTION with where)"
    )


def test_every_function_listed_still_writes_raw() -> None:
    """A function listed that no longer writes raw (or no longer exists) is taken off."""
    writing = {where for where, _, _ in _raw_writes_in_db()}
    assert sorted(set(IN_CALLERS_TRANSACTION) - writing) == []


PLANTED = """
from db.database import transaction, write

_MARK = "UPDATE jobs SET status = 'done' WHERE id = ?"
_UPDATE = "UPDATE jobs SET "
_READ: str = "SELECT 1"


async def raw(conn, job_id):
    await conn.execute("UPDATE jobs SET status = 'done' WHERE id = ?", (job_id,))


async def raw_by_name(conn, job_id):
    await conn.execute(_MARK, (job_id,))


async def raw_with(conn):
    await conn.execute_fetchall(
        "WITH old AS (SELECT id FROM jobs) DELETE FROM jobs WHERE id IN old RETURNING id"
    )


async def raw_from_a_parameter(conn, sql):
    await conn.execute(sql)


async def raw_insert(conn):
    await conn.execute_insert("INSERT INTO jobs (id) VALUES ('x')")


async def raw_after_a_constant(conn, job_id):
    await conn.execute(f"{_UPDATE} status = 'done' WHERE id = ?", (job_id,))


async def raw_after_a_parameter(conn, table):
    await conn.execute(f"{table} SET status = 'done'")


async def raw_after_comments(conn):
    await conn.execute("-- tidy\\n/* old ones */ DELETE FROM jobs")


async def raw_by_keyword(conn):
    await conn.execute(sql="DELETE FROM jobs")


async def raw_by_a_parameter_named_as_a_read(conn, _READ):
    await conn.execute(_READ)


async def a_read_of_a_local(conn):
    sql = "SELECT 1"
    return await conn.execute_fetchall(sql)


async def a_read_of_an_annotated_constant(conn):
    return await conn.execute_fetchall(_READ)


async def in_a_transaction(conn, job_id):
    async with transaction(conn):
        await conn.execute(_MARK, (job_id,))


async def through_write(conn, job_id):
    await write(conn, _MARK, (job_id,))


async def a_read(conn, job_id):
    return await conn.execute_fetchall("SELECT * FROM jobs WHERE id = ?", (job_id,))
"""


def test_a_planted_raw_write_is_caught_and_the_allowed_forms_are_not() -> None:
    caught = {where for where, _ in raw_writes(PLANTED, "planted")}
    assert caught == {
        "planted.raw",
        "planted.raw_by_name",
        "planted.raw_with",
        "planted.raw_from_a_parameter",
        "planted.raw_insert",
        "planted.raw_after_a_constant",
        "planted.raw_after_a_parameter",
        "planted.raw_after_comments",
        "planted.raw_by_keyword",
        "planted.raw_by_a_parameter_named_as_a_read",
    }
