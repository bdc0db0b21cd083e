"""The `>>>` examples in the packages' docstrings run, and show what they say they show.
Examples that could not run alone (fragments of a process) are written as plain
indented code instead, so every `>>>` a reader sees is checked here."""
from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest
from conftest import ROOT

PACKAGES = ["actors", "supervision", "storage", "sim", "apps"]


def modules() -> list[str]:
    """Every module of the packages whose source holds a `>>>` example."""
    found = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            path = ROOT / (info.name.replace(".", "/") + ("/__init__.py" if info.ispkg else ".py"))
            if ">>> " in path.read_text():
                found.append(info.name)
    return sorted(found)


MODULES = modules()


def test_the_examples_are_found():
    assert {"apps.rides.geo", "apps.video.ladder"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = doctest.DocTestFinder().find(module, name)
    assert sum(len(test.examples) for test in tests) > 0, f"{name} has a '>>> ' outside its docstrings"
    for test in tests:
        runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()
