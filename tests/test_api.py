"""The public surface: complete, sorted, importable, and its doctests run."""

from __future__ import annotations

import doctest
import importlib

import pytest

import kubetrail


def test_all_is_sorted_and_complete() -> None:
    assert kubetrail.__all__ == sorted(kubetrail.__all__)
    for name in kubetrail.__all__:
        assert hasattr(kubetrail, name), name
    public = {n for n in vars(kubetrail) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(kubetrail.__all__)


def test_py_typed_marker_ships() -> None:
    from importlib.resources import files

    assert files("kubetrail").joinpath("py.typed").is_file()


@pytest.mark.parametrize("module", [
    "kubetrail.config", "kubetrail.events.model", "kubetrail.query.filters",
])
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_errors_share_one_root_and_carry_hints() -> None:
    for name in ("ConfigError", "InputError", "LegacyFormatError", "QueryError", "StoreError"):
        assert issubclass(getattr(kubetrail, name), kubetrail.KubetrailError)
    err = kubetrail.InputError("no such file", path="x.log", hint="check the path")
    assert str(err) == "x.log: no such file\n  hint: check the path"
    assert err.exit_code == 1
