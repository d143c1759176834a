"""The pgvector tests without their server: skipped with the reason on a developer's machine,
a failure under CI=true, like every service-backed test (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# pytest, in a process where `import pgserver` finds nothing.
WITHOUT_PGSERVER = (
    "import sys; sys.modules['pgserver'] = None; import pytest; "
    "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', "
    "'tests/knowledge/test_pgvector.py']))"
)


def run_without_pgserver(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PGSERVER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**environment, **env},
        check=False,
    )


def test_without_pgserver_the_tests_skip_with_the_reason() -> None:
    result = run_without_pgserver()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" in result.stdout
    assert "the pgserver package is not installed" in result.stdout


def test_without_pgserver_under_ci_the_tests_fail() -> None:
    result = run_without_pgserver(CI="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CI=true: the pgvector tests must run" in result.stdout
    assert "skipped" not in result.stdout
