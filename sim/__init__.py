"""Deterministic simulation and the `letitcrash` command line.

    letitcrash sim scenarios/counter.toml            # run a scenario, report
    letitcrash replay run.trace                      # re-run a recorded trace, find a divergence
    letitcrash shrink scenarios/x.toml --seed 7      # a smaller scenario that still fails
    letitcrash sim scenarios/x.toml --html run.html  # the run as one page
    letitcrash trace show run.trace --kind fault     # a trace's events, filtered, or --json

From Python:

    from sim import load, run
    result = run(load("scenarios/counter.toml"), seed=7)
    assert result.passed, result.failure

Modules: `core` (Simulation: clock, nodes, driver, streams, buggify), `network`, `faults`
(kinds, plan, injector), `disk` (a node's store under faults), `trace`, `scenario` and
`schema` (TOML files), `system` (the System base class and registry), `systems/` (the
counter service), `runner`, `report` (text and JSON), `report_html` (the page), `replay`,
`shrink`, `cli`, `pytest_plugin` (@pytest.mark.letitcrash: a test per seed).
"""
from .core import Failure, Simulation, SimulationError, Stream, active, buggify
from .runner import Result, run
from .scenario import Scenario, load, parse
from .schema import Field, ScenarioError
from .system import System, check, register

__all__ = [
    "Failure", "Field", "Result", "Scenario", "ScenarioError", "Simulation", "SimulationError",
    "Stream", "System", "active", "buggify", "check", "load", "parse", "register", "run",
]
