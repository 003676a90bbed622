"""Deterministic, realistic Kubernetes audit traffic for tests, demos and benchmarks.

``simulate()`` yields ``(cluster, event)`` pairs; ``write_simulation()`` streams them to disk in
the API server's own formats or as EKS/GKE/AKS exports. Attack scenarios come from the
``SCENARIOS`` registry; add your own with ``register_scenario``.

>>> from kubetrail.simulate import simulate
>>> sum(1 for _ in simulate(events=100, scenarios=["exec-shell"]))
100
"""

from __future__ import annotations

from .background import Profile
from .run import DEFAULT_START, simulate
from .scenarios import SCENARIOS, Scenario, ScenarioContext, register_scenario, scenario
from .writer import FORMATS, SimulationSummary, write_simulation

__all__ = [
    "DEFAULT_START",
    "FORMATS",
    "SCENARIOS",
    "Profile",
    "Scenario",
    "ScenarioContext",
    "SimulationSummary",
    "register_scenario",
    "scenario",
    "simulate",
    "write_simulation",
]
from . import more_scenarios  # noqa: F401  (registers its scenarios)
