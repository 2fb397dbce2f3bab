"""Reading docpipe's own source in tests."""

from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse``, in a thread of its own and again if need be: CPython 3.11.7 can raise
    "AST constructor recursion depth mismatch" from it in a thread whose recursion limit
    Hypothesis has moved (CPython gh-106905), even in a new thread now and then."""
    for _ in range(4):
        with ThreadPoolExecutor(1) as pool:
            try:
                return pool.submit(ast.parse, source, filename).result()
            except SystemError:
                continue
    return ast.parse(source, filename)
