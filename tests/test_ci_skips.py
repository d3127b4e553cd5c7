"""The CI rule of ``tests/conftest.py``: with ``CI=true`` an integration test that does not run
fails the run, whether it skips in its body, in a fixture, by a marker, or with its module."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]

INI = """
[pytest]
markers =
    integration: real servers
"""
CONFTEST = """
import pytest
from tests import conftest as suite
globals().update({k: getattr(suite, k) for k in dir(suite) if k.startswith("pytest_")})

@pytest.fixture(scope="session")
def _redis_server_url():
    pytest.skip("no Redis server")

@pytest.fixture
def redis_url(_redis_server_url):
    return _redis_server_url
"""


@pytest.fixture
def ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("CI", "true")
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_a_marked_test_that_skips_in_its_body_fails(ci: pytest.Pytester) -> None:
    body = "import pytest\n@pytest.mark.integration\ndef test_x():\n    pytest.skip('no server')\n"
    ci.makepyfile(test_a=body)
    result = ci.runpytest()
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_an_unmarked_test_whose_server_fixture_skips_fails(ci: pytest.Pytester) -> None:
    """A test is an integration test by the server it asks for, marked or not."""
    ci.makepyfile(test_a="def test_x(redis_url):\n    pass\n\ndef test_pure():\n    pass\n")
    result = ci.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_module_skipped_at_import_fails(ci: pytest.Pytester) -> None:
    """Its tests are never collected, so no test report would say they did not run."""
    skipped = "import pytest\npytest.importorskip('no_such_module_here')\ndef test_x():\n    pass\n"
    ci.makepyfile(test_a=skipped, test_b="def test_y():\n    pass\n")
    result = ci.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the run
    result.stdout.fnmatch_lines(["*test_a.py skipped in CI (counts as a failure)*"])


def test_outside_ci_a_skip_is_only_a_skip(ci: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI")
    ci.makepyfile(test_a="def test_x(redis_url):\n    pass\n")
    result = ci.runpytest()
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.OK


def test_the_ci_entry_point_runs_the_suite_with_ci_set(tmp_path: Path) -> None:
    """The rule only applies under ``CI=true``: ``.ci/run`` sets it, whatever the runner exports."""
    (tmp_path / ".ci").mkdir()
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    stub = tmp_path / "scripts" / "test"
    stub.write_text('#!/usr/bin/env bash\necho "CI=${CI:-unset} args=$*"\n')
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    done = subprocess.run([str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True,
                          check=True, timeout=30)
    assert done.stdout == "CI=true args=\n"
