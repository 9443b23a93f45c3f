"""Contract test suites: one module per protocol, run unchanged against every implementation.

Each module holds the tests of one protocol's docstring and the fixtures they share, all derived from
one fixture that the matching ``logpull_dagster_tests/test_contract_*.py`` defines, parametrised over
the implementations. These modules are not collected by themselves (their names do not start with
``test_``): a test runs once per implementation, from the ``test_contract_*.py`` that star-imports it.
"""

import pkgutil

import pytest

# The tests live outside test_*.py files, which pytest would not rewrite: a failing assert would then
# show no values. Registered here, before any submodule is imported (this package is imported first).
pytest.register_assert_rewrite(*(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)))
