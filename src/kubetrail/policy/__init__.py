"""Audit policy: load and evaluate `audit.k8s.io/v1` Policy files exactly as kube-apiserver
does, and replay them over recorded traffic."""

from __future__ import annotations

from .attributes import attributes_from_event, attributes_from_fields, parse_request_path
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

__all__ = [
    "API_VERSION",
    "LEVELS",
    "STAGES",
    "Attributes",
    "Explanation",
    "GroupResources",
    "Policy",
    "PolicyDecision",
    "PolicyRule",
    "RuleMiss",
    "attributes_from_event",
    "attributes_from_fields",
    "level_rank",
    "load_policy",
    "parse_request_path",
]
