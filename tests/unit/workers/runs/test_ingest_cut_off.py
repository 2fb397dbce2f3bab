"""Ctrl-C during an ingest is an interruption, even when cleaning up the database connection
it landed in raised an error of its own as it unwound."""

from __future__ import annotations

import pytest

from workers.runs.ingest import _by_ctrl_c


class DriverError(Exception):
    pass


class WrappedError(Exception):
    pass


def _cleanup_failed_under_ctrl_c() -> BaseException:
    try:
        try:
            raise KeyboardInterrupt
        finally:  # the session's close, on a connection still in its query
            try:
                raise DriverError("can't change 'autocommit' now")
            except DriverError as inner:
                raise WrappedError("(psycopg.ProgrammingError)") from inner
    except WrappedError as exc:
        return exc
    raise AssertionError("unreachable")


def test_ctrl_c_behind_a_cleanup_error_is_still_an_interruption() -> None:
    assert _by_ctrl_c(_cleanup_failed_under_ctrl_c())


@pytest.mark.parametrize("error", [DriverError("the database went away"),
                                   WrappedError("a failure wrapped by the driver")])
def test_an_error_of_its_own_is_not(error: BaseException) -> None:
    assert not _by_ctrl_c(error)
