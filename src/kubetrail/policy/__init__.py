"""Audit policy: load and evaluate `audit.k8s.io/v1` Policy files exactly as kube-apiserver
does, lint them, replay them over recorded traffic, recommend one, and print the API server
flags that deploy it."""

from __future__ import annotations

from .attributes import attributes_from_event, attributes_from_fields, parse_request_path
from .flags import ApiServerConfig, FlagOptions, apiserver_config
from .lint import LINT_CHECKS, SEVERITIES, Finding, lint_policy
from .load import API_VERSION, load_policy
from .model import (
    LEVELS,
    STAGES,
    Attributes,
    Explanation,
    GroupResources,
    Policy,
    PolicyDecision,
    PolicyRule,
    RuleMiss,
    level_rank,
)
from .recommend import PROFILES, projected_events, recommend_policy
from .replay import PolicyDiff, Simulation, diff_policies, simulate_policy
from .traffic import RequestClass, Traffic, load_traffic, traffic_from_archive, traffic_from_files

__all__ = [
    "API_VERSION",
    "LEVELS",
    "LINT_CHECKS",
    "PROFILES",
    "SEVERITIES",
    "STAGES",
    "ApiServerConfig",
    "Attributes",
    "Explanation",
    "Finding",
    "FlagOptions",
    "GroupResources",
    "Policy",
    "PolicyDecision",
    "PolicyDiff",
    "PolicyRule",
    "RequestClass",
    "RuleMiss",
    "Simulation",
    "Traffic",
    "apiserver_config",
    "attributes_from_event",
    "attributes_from_fields",
    "diff_policies",
    "level_rank",
    "lint_policy",
    "load_policy",
    "load_traffic",
    "parse_request_path",
    "projected_events",
    "recommend_policy",
    "simulate_policy",
    "traffic_from_archive",
    "traffic_from_files",
]
