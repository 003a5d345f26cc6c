"""The README opens with the two commands of the contract, and CI runs exactly those."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The non-comment lines of the README's first ``sh`` block, extracted by the same awk program as ``.ci/run``."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    program = ci.split("awk '", 1)[1].split("' README.md", 1)[0]
    result = subprocess.run(["awk", program, "README.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_the_readme_opens_with_the_demo_and_the_test_command() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# agent-comms")
    assert "```sh" in lines[1:4], "the commands come first"
    demo, tests = readme_commands()
    assert demo.endswith("agent-comms demo")
    assert "pip install" in demo
    assert tests.endswith("nox -s tests")
    assert tests.startswith("python3 -m venv .venv")


def test_ci_runs_the_readme_commands_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'bash -euo pipefail -c "$command"' in ci
    assert "README.md" in ci
