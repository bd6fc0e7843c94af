"""Shared pytest configuration: fixtures live in tests/fixtures/, one module per area."""

pytest_plugins = [
    "tests.fixtures.harness",
    "tests.fixtures.controlplane",
    "tests.fixtures.kube",
    "tests.fixtures.browser",
    "tests.fixtures.agent_process",
]
