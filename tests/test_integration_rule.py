"""conftest.py's rule: a test is `integration` by the fixtures it uses, `-m "not integration"`
selects the rest, and a fast-set test that starts a process or opens a network socket fails,
naming itself, instead of passing slowly."""

from helpers import ROOT

pytest_plugins = ("pytester",)

TESTS = '''
import socket
import subprocess
import sys


def test_pure():
    assert sum([1, 2]) == 3


def test_forgets_its_fixture():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_forgets_the_network():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))


def test_marked_by_its_fixture(subprocesses):
    subprocess.run([sys.executable, "-c", "pass"], check=True)
'''


def test_the_fast_set_refuses_what_only_integration_tests_may_do(pytester, subprocesses):
    pytester.makeini("[pytest]\nmarkers =\n    integration: real components\n")
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(helpers=(ROOT / "tests" / "helpers.py").read_text(), test_rule=TESTS)

    fast = pytester.runpytest_subprocess("-m", "not integration", "-p", "no:cacheprovider")
    fast.assert_outcomes(passed=1, failed=2, deselected=1)
    fast.stdout.fnmatch_lines([
        "*test_rule.py::test_forgets_its_fixture: subprocess.Popen in a test that is not "
        "marked integration; use one of the fixtures that mark it (*subprocesses*",
        "*test_rule.py::test_forgets_the_network: socket.bind in a test *"])

    integration = pytester.runpytest_subprocess("-m", "integration", "-p", "no:cacheprovider")
    integration.assert_outcomes(passed=1, deselected=3)
