"""A database outage is waited out; anything else the database says is not."""

from __future__ import annotations

import pytest
from sqlalchemy import exc

from workers.db.session import is_outage, retry_outage

REFUSED = exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
DUPLICATE = exc.IntegrityError("INSERT", {}, Exception("duplicate key"))


def test_a_lost_connection_is_an_outage_and_a_refusal_is_not() -> None:
    assert is_outage(REFUSED)
    assert is_outage(exc.InterfaceError("SELECT 1", {}, Exception("closed")))
    assert is_outage(exc.TimeoutError("QueuePool limit reached"))
    cut = exc.DBAPIError("SELECT 1", {}, Exception("server closed the connection"),
                         connection_invalidated=True)
    assert is_outage(cut)
    assert not is_outage(DUPLICATE)
    assert not is_outage(ValueError("a bug"))


def test_a_transaction_is_run_again_until_the_database_answers() -> None:
    tries = []

    def transaction() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise REFUSED
        return "written"

    assert retry_outage(transaction, seconds=10, what="a test") == "written"
    assert len(tries) == 3


def test_an_error_that_is_not_an_outage_is_raised_at_once() -> None:
    tries = []

    def transaction() -> None:
        tries.append(1)
        raise DUPLICATE

    with pytest.raises(exc.IntegrityError):
        retry_outage(transaction, seconds=10, what="a test")
    assert len(tries) == 1


def test_an_outage_longer_than_the_bound_is_raised() -> None:
    tries = []

    def transaction() -> None:
        tries.append(1)
        raise REFUSED

    with pytest.raises(exc.OperationalError):
        retry_outage(transaction, seconds=0.5, what="a test")
    assert 2 <= len(tries) <= 3  # 0.25 s, then 0.5 s would pass the bound
