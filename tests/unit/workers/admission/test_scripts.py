"""The Lua scripts ship as files beside the code that runs them, and each one is used."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from workers.admission import breaker, limiter
from workers.admission.scripts import load_script

LUA = Path(str(resources.files("workers.admission").joinpath("lua")))


def test_every_script_file_is_loaded_by_the_code_that_runs_it() -> None:
    files = {path.stem for path in LUA.glob("*.lua")}
    loaded = set()
    for module in (limiter, breaker):
        loaded |= set(re.findall(r'load_script\("(\w+)"\)', Path(module.__file__).read_text()))
    assert files == loaded == {"acquire", "settle", "cooldown", "release_probe",
                               "breaker_allow", "breaker_record"}


@pytest.mark.parametrize("name", ["acquire", "settle", "cooldown", "release_probe",
                                  "breaker_allow", "breaker_record"])
def test_a_script_is_lua_that_returns_an_answer(name: str) -> None:
    source = load_script(name)
    assert "redis.call(" in source and re.search(r"^\s*return ", source, re.M)
    assert '"""' not in source


def test_the_package_data_ships_the_scripts() -> None:
    pyproject = (Path(limiter.__file__).parents[2] / "pyproject.toml").read_text()
    assert '"admission/lua/*.lua"' in pyproject
