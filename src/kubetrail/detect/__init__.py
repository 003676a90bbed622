"""Detection: rules as data, compiled to SQL, run over batches in real time and over the
archive, with thresholds, first-seen terms and sequences."""

from __future__ import annotations

from .alert import Alert, Suppressor
from .condition import CompileError, Condition, compile_condition, parse_condition
from .engine import MACROS_SQL, Engine
from .rules import RULE_SCHEMA, SEVERITIES, Rule, RuleError, RuleSet, load_rules

__all__ = [
    "MACROS_SQL",
    "RULE_SCHEMA",
    "SEVERITIES",
    "Alert",
    "CompileError",
    "Condition",
    "Engine",
    "Rule",
    "RuleError",
    "RuleSet",
    "Suppressor",
    "compile_condition",
    "load_rules",
    "parse_condition",
]
