"""The suite's own scheduling: what keeps its wall time near the budget."""

import pytest

from tests.conftest import SHARED_RUNS


def test_tests_of_a_shared_smoke_run_are_grouped_for_xdist(request):
    """Under `--dist loadgroup` (the README's command) xdist sends a group to one worker only if the group
    is in the test's id; pytest 9.2 with xdist 3.8 dropped it silently, and each worker trained the shared
    smoke runs again (~70 s more for distill's alone)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under pytest-xdist --dist loadgroup")
    grouped = [item for item in request.session.items if any(n in item.fixturenames for n in SHARED_RUNS)]
    lost = [item.nodeid for item in grouped if "@" not in item.nodeid.rsplit("]", 1)[-1]]
    assert not lost, (f"xdist did not group {len(lost)} of {len(grouped)} tests of a shared smoke run "
                                  f"(e.g. {lost[:1]}): install the pytest of setup.cfg's [test] extra")
