"""docpipe's Responses API simulator (a development and test tool, never a real model)."""

from workers.simulator.server import Simulator, SimulatorConfig, input_key, run

__all__ = ["Simulator", "SimulatorConfig", "input_key", "run"]
