"""Shared fixtures. Scenarios are cheap (tiny size builds in ~0.1 s), so each test builds its own."""

import warnings

import pytest


@pytest.fixture(autouse=True)
def _quiet_expected_torch_warnings():
    # The checkpoint fault makes torch warn "None of the inputs have requires_grad=True": that warning is
    # the fault itself, not a test problem.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="None of the inputs have requires_grad=True")
        yield


def pytest_configure(config):
    """In CI the browser and graphviz tests must run, not skip: `make test` installs both with apt-get."""
    import os
    import shutil

    missing = [tool for tool in ("dot", "chromium") if shutil.which(tool) is None]
    if os.environ.get("CI") and missing:
        raise pytest.UsageError(f"CI needs {', '.join(missing)}: run the tests with `make test`, which installs them")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite the golden files from current output")


@pytest.fixture
def update_golden(request):
    return request.config.getoption("--update-golden")
