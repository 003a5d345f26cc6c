"""``agent-comms demo``: a private mesh of real agent processes, step by step, with a failover and its time."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Final

from agent_comms.cli.common import error

if TYPE_CHECKING:
    from agent_comms.demo import DemoReport, StepFailed

#: Exit status when a step of the demo failed (the message names the step).
EXIT_STEP_FAILED: Final = 1

_DESCRIPTION = """\
Start a small mesh of real agent processes ('agent-comms bridge jsonl') on a free port, with a private temporary
AGENT_COMMS_HOME and key (it never touches or joins your own mesh), and show step by step:

  agents registering, a public and a private room, messages, a direct message with its delivered and read
  receipts, a late joiner catching up on the room history, a SIGKILL of the coordinator process and the survivors
  electing a new one (with the measured failover time), and a new agent joining the same mesh afterwards.

It ends with a summary of the figures and exits 0, usually within 5 to 20 seconds. Every process it started is
stopped when it ends, also on Ctrl-C, SIGTERM or a failed step.

Exit status: 0 success; 1 a step failed (the message names it); 128+N stopped by signal N (130 for Ctrl-C)."""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="see it work: a private mesh of real agents, a coordinator crash, the failover",
        description=_DESCRIPTION,
        epilog=("examples:\n  agent-comms demo\n  agent-comms demo --json | jq '.failover_ms'"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print only a JSON summary of the figures")
    parser.add_argument("--plain", action="store_true", help="plain text even on a terminal (no colours)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import signal

    import trio

    from agent_comms.demo import DemoReport, StepFailed, narrator_for, run_demo

    report = DemoReport()
    narrator = narrator_for(json_output=args.json, plain=args.plain)
    stopped_by: list[int] = []

    async def main() -> None:
        # A signal cancels the demo; its cleanup (shielded) still stops every process it started.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def demo() -> None:
                    await run_demo(narrator, report)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(demo)
                async for signum in signals:
                    stopped_by.append(signum)
                    nursery.cancel_scope.cancel()
                    break

    status = 0
    try:
        trio.run(main)
    except* StepFailed as group:
        failure = _first(group)
        error(f"demo: {failure}")
        report.failed_step, report.error = failure.step, failure.reason
        status = EXIT_STEP_FAILED
    except* OSError as group:  # no temporary directory, no process could start, ...
        problem = _leaves(group)[0]
        error(f"demo: could not run: {problem}")
        report.error = str(problem)
        status = EXIT_STEP_FAILED
    except* KeyboardInterrupt:  # before the signal handler was installed: nothing was started yet
        stopped_by.append(signal.SIGINT)
    if stopped_by:
        name = signal.Signals(stopped_by[0]).name
        error(f"demo stopped by {name}; {_stopped(report)}")
        report.error = f"stopped by {name}"
        status = 128 + stopped_by[0]
    elif status and report.processes_started:
        error(_stopped(report))
    if report.processes_left:
        error(f"{report.processes_left} agent process(es) could not be stopped: {report.agents}")
    if args.json:
        try:
            print(json.dumps(report.to_json(), indent=2), flush=True)
        except BrokenPipeError:
            from agent_comms.demo.show import silence_stdout

            silence_stdout()
    return status


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _first(group: BaseExceptionGroup[StepFailed]) -> StepFailed:
    from agent_comms.demo import StepFailed

    leaf = _leaves(group)[0]
    assert isinstance(leaf, StepFailed)
    return leaf


def _stopped(report: DemoReport) -> str:
    count = report.processes_started
    return f"stopped all {count} agent process(es) it had started" if count else "no agent process had started"
