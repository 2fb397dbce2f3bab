"""Only :mod:`workers.db.repository.items` writes ``Item.status``, so the table in
:mod:`workers.db.states` is the whole truth about how an item changes state."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import workers.settings
from tests.support.source import parse

PACKAGE = Path(workers.settings.__file__).parent
OWNER = PACKAGE / "db" / "repository" / "items.py"
_STATEMENTS = {"update", "insert", "insert_for", "postgres_insert", "sqlite_insert"}
_RAW_SQL = re.compile(r"\b(update\s+items\s+set|insert\s+into\s+items)\b[^;]*\bstatus\b",
                      re.IGNORECASE | re.DOTALL)


def _sets_status(call: ast.Call) -> bool:
    if any(k.arg == "status" for k in call.keywords):
        return True
    for arg in call.args:
        dicts = [arg] if isinstance(arg, ast.Dict) else (
            [arg.elt] if isinstance(arg, ast.ListComp) else
            list(arg.elts) if isinstance(arg, (ast.List, ast.Tuple)) else [])
        if any(isinstance(d, ast.Dict) and _has_status_key(d) for d in dicts):
            return True
    return False


def _has_status_key(node: ast.Dict) -> bool:
    return any(isinstance(k, ast.Constant) and k.value == "status" for k in node.keys)


def _is_item_row(node: ast.Dict) -> bool:
    """A dict of column values, built apart from its statement, that sets an item state."""
    return any(isinstance(k, ast.Constant) and k.value == "status"
               and re.search(r"\bItemStatus\.|\bstates\.|\.target\b", ast.unparse(v))
               for k, v in zip(node.keys, node.values, strict=True))


def _table(call: ast.Call) -> str | None:
    """The table a ``.values(...)`` chain writes: the argument of its update()/insert()."""
    node: ast.expr = call.func
    while isinstance(node, (ast.Attribute, ast.Call)):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in _STATEMENTS and node.args:
                return ast.unparse(node.args[-1])
            node = node.func
        else:
            node = node.value
    return None


def status_writes(source: str) -> list[int]:
    """Lines of ``source`` that write an item's status."""
    tree = parse(source)
    imports_item = any(isinstance(n, ast.ImportFrom) and any(a.name == "Item" for a in n.names)
                       for n in ast.walk(tree))
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _sets_status(node):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "Item":
                lines.append(node.lineno)
            elif isinstance(func, ast.Attribute) and func.attr in ("values", "from_select") \
                    and (table := _table(node)) is not None and re.search(r"\bItem\b|^items$",
                                                                           table):
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)) and imports_item:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for t in targets):
                lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and _is_item_row(node):
            lines.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and _RAW_SQL.search(node.value):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_scan_sees_every_way_of_writing_the_column() -> None:
    examples = [
        "session.execute(update(Item).where(Item.id == 1).values(status='failed'))",
        "session.execute(insert_for(session, Item).values([{'status': 'pending'}]))",
        "session.add(Item(run_id=1, status=ItemStatus.PENDING))",
        "from workers.db.models import Item\nitem = session.get(Item, 1)\nitem.status = 'x'",
        "session.execute(text('UPDATE items SET status = :s WHERE id = 1'))",
        "session.execute(update(table_of(Item)).values(status=bindparam('s')))",
        "rows = [{'run_id': 1, 'status': ItemStatus.PENDING}]\nsession.execute(stmt, rows)",
    ]
    for example in examples:
        assert status_writes(example), example
    assert status_writes("session.execute(update(Run).values(status='paused'))") == []
    assert status_writes("batch.status = 'cancelling'") == []


def test_only_the_items_repository_writes_item_status() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != OWNER and (found := status_writes(path.read_text()))
    }
    assert offenders == {}


def test_the_items_repository_is_where_the_writes_are() -> None:
    source = OWNER.read_text()
    lines = set(status_writes(source))
    writers = {node.name for node in parse(source).body
               if isinstance(node, ast.FunctionDef)
               and lines & set(range(node.lineno, (node.end_lineno or node.lineno) + 1))}
    # The three ways an item is created, and one function per transition (the one claim
    # serves claim_item and claim_items; complete_many every success).
    assert writers == {
        "add_items", "add_item_tree", "add_failed_items",
        "mark_queued", "touch_queued", "mark_requeued", "_claim",
        "void_dead_claims",
        "unblock_parent", "complete_many", "schedule_retry", "park_item",
        "release_item", "release_after_error", "fail_item", "cancel_unsent",
        "reset_for_replay", "move_into_batch", "unbatch_all", "return_to_batching", "send_live",
    }
