"""Managed-cluster exports (EKS, GKE, AKS): one module per provider, one Shape list here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..decode import Shape

CLOUD_SHAPES: list[Shape] = []
