"""Flower's launch: no open Flower beyond loopback, credentials never on the command line."""

from __future__ import annotations

import pytest

from workers.errors import ConfigurationError
from workers.ops.flower import is_loopback, launch
from workers.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type, call-arg]


def test_credentials_go_through_the_environment_only() -> None:
    plan = launch(settings(flower_user="ops", flower_password="s3cret", flower_address="0.0.0.0",
                           flower_max_tasks=5000))
    assert plan.authenticated and plan.environ == {"FLOWER_BASIC_AUTH": "ops:s3cret"}
    assert not any("s3cret" in arg for arg in plan.argv)
    assert "--max-tasks=5000" in plan.argv and "--address=0.0.0.0" in plan.argv
    assert "--enable-events" in plan.argv


@pytest.mark.parametrize("address", ["0.0.0.0", "10.1.2.3", "::", "flower.internal"])
def test_refuses_to_listen_beyond_loopback_without_login(address: str) -> None:
    with pytest.raises(ConfigurationError, match="no login"):
        launch(settings(flower_address=address), allow_no_auth_on_loopback=True)


def test_open_on_loopback_only_when_asked() -> None:
    with pytest.raises(ConfigurationError, match="--no-auth"):
        launch(settings(flower_address="127.0.0.1"))
    plan = launch(settings(flower_address="127.0.0.1"), allow_no_auth_on_loopback=True)
    assert not plan.authenticated and plan.environ == {}


@pytest.mark.parametrize("user, password", [("ops", None), (None, "pw"), ("o:ps", "pw"),
                                            ("ops", "p,w")])
def test_refuses_half_or_unusable_credentials(user: str | None, password: str | None) -> None:
    with pytest.raises(ConfigurationError):
        launch(settings(flower_user=user, flower_password=password))


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.1", "example.com", ""]))
