"""Flower, configured for docpipe: basic auth, a bounded task memory, events on.

The credentials go to Flower through its ``FLOWER_BASIC_AUTH`` environment variable, never
on its command line, where ``ps`` would show them to every user of the host.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from workers.errors import ConfigurationError
from workers.settings import Settings

#: Workers that stopped sending heartbeats are dropped from the dashboard after this long.
PURGE_OFFLINE_WORKERS_SECONDS = 3600


@dataclass(frozen=True)
class FlowerLaunch:
    """The ``celery flower`` arguments and the environment to add for them."""

    argv: list[str]
    environ: dict[str, str]
    authenticated: bool


def is_loopback(address: str) -> bool:
    """True when ``address`` is reachable only from this host."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def launch(settings: Settings, *, allow_no_auth_on_loopback: bool = False) -> FlowerLaunch:
    """How to start Flower for ``settings``.

    Raises:
        ConfigurationError: no credentials, and Flower would be open to more than this host,
            or nobody said that an open Flower on loopback is intended.
    """
    user = settings.flower_user
    password = settings.flower_password.get_secret_value() if settings.flower_password \
        else None
    if bool(user) != bool(password):
        raise ConfigurationError("set both DOCPIPE_FLOWER_USER and DOCPIPE_FLOWER_PASSWORD")
    if user and password and (":" in user or "," in user + password):
        # FLOWER_BASIC_AUTH is a comma-separated list of user:password pairs.
        raise ConfigurationError("Flower credentials cannot contain ',' (nor ':' in the user)")
    if not user:
        if not is_loopback(settings.flower_address):
            raise ConfigurationError(
                f"Flower would listen on {settings.flower_address} with no login: set "
                "DOCPIPE_FLOWER_USER and DOCPIPE_FLOWER_PASSWORD (Flower can revoke tasks "
                "and shut workers down)")
        if not allow_no_auth_on_loopback:
            raise ConfigurationError(
                "Flower has no login: set DOCPIPE_FLOWER_USER and DOCPIPE_FLOWER_PASSWORD, or "
                "pass --no-auth to run it open on loopback only")
    argv = ["flower", f"--address={settings.flower_address}", f"--port={settings.flower_port}",
            f"--max-tasks={settings.flower_max_tasks}",
            f"--purge-offline-workers={PURGE_OFFLINE_WORKERS_SECONDS}",
            # Ask workers that started before Flower to send events too.
            "--enable-events", "--tasks-columns=name,uuid,state,args,received,runtime,worker"]
    environ = {"FLOWER_BASIC_AUTH": f"{user}:{password}"} if user else {}
    return FlowerLaunch(argv=argv, environ=environ, authenticated=bool(user))
