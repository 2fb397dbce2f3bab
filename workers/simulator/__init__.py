"""docpipe's Responses API simulator (a development and test tool, never a real model)."""

from workers.simulator.inputs import input_key
from workers.simulator.server import Simulator, SimulatorConfig, run

__all__ = ["Simulator", "SimulatorConfig", "input_key", "run"]
