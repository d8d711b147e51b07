import pytest

from tests.kit import Kit
from tests.support.needs import in_ci
from tests.support.browser import chromium  # noqa: F401  (one browser for the session, shared by every report test)


@pytest.fixture
def kit(tmp_path):
    """A fresh copy of the kit in a temporary folder."""
    folder = tmp_path / "kit"
    folder.mkdir()
    return Kit(folder)


# The longest file first: with the files spread over parallel workers
# (make test), the 20,000-task run then overlaps the rest instead of ending last.
FIRST = ("tests/faults/test_scale.py",)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(FIRST))


# Under CI a skip is a failure of the session, whatever raised it (a fixture
# that forgot tests/support/needs.py, a skipif, an importorskip): CI provides
# everything the suite needs, so a skipped test there is an untested claim.
_skipped = []


def _note_skip(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if in_ci() and _skipped and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if in_ci() and _skipped:
        terminalreporter.section("skipped under CI (each one fails the run)", red=True)
        for line in _skipped:
            terminalreporter.line(line, red=True)
