"""Tests for the plugin system (``agent_comms.plugins``, ``agent_comms.hookspecs``) and ``agent-comms plugins``.

Plugins are loaded for real: from the example distribution ``agent-comms-echo-example`` (``examples/minimal-bridge``,
which the nox ``tests`` session installs) and from small distributions these tests put on ``sys.path`` (a
``*.dist-info`` directory with an ``entry_points.txt`` beside a module), never from a mocked entry-point list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pluggy
import pytest
import trio

import agent_comms
from agent_comms import hookspecs
from agent_comms.bridges import jsonl
from agent_comms.cli import main
from agent_comms.hookspecs import HarnessInfo, PushPath
from agent_comms.plugins import (
    PluginError,
    PluginInfo,
    find_bridge,
    find_harness,
    get_plugin_manager,
    list_bridges,
    list_harnesses,
    list_plugins,
    relay_deliveries,
)
from agent_comms.testing import open_in_memory_mesh

JSONL_HOOKS = ("serve",)
JSONL_INFO = PluginInfo(
    name="jsonl",
    distribution="agent-comms",
    version=agent_comms.__version__,
    hooks=JSONL_HOOKS,
    harness="jsonl",
    builtin=True,
    push=("relay",),
)
JSONL_JSON = {
    "name": "jsonl",
    "distribution": "agent-comms",
    "version": agent_comms.__version__,
    "hooks": list(JSONL_HOOKS),
    "harness": "jsonl",
    "push": ["relay"],
    "builtin": True,
}
ECHO_JSON = {
    "name": "echo",
    "distribution": "agent-comms-echo-example",
    "version": "0.1.0",
    "hooks": ["serve"],
    "harness": "echo-example",
    "push": ["relay"],
    "builtin": False,
}

InstallFake = Callable[..., None]


def _echo_installed() -> bool:
    try:
        metadata.distribution("agent-comms-echo-example")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture
def echo_installed() -> None:
    """Tests of real entry-point loading need the example plugin; CI must have it (nox installs it)."""
    if not _echo_installed():
        message = "agent-comms-echo-example is not installed: pip install -e ./examples/minimal-bridge"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def install_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InstallFake]:
    """Put a distribution with one ``agent_comms`` entry point on ``sys.path``: ``install(entry, module, source)``."""
    modules: list[str] = []

    def install(entry: str, module: str, source: str, *, dist: str = "agent-comms-fake", version: str = "1.0") -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[agent_comms]\n{entry} = {module}\n")
        modules.append(module)

    monkeypatch.syspath_prepend(str(tmp_path))
    yield install
    for module in modules:
        sys.modules.pop(module, None)


HARNESS_PLUGIN = """
    from agent_comms.hookspecs import Bridge, PushPath, hookimpl

    def status(home):
        return "configured"

    @hookimpl
    def register_bridges(register):
        register(
            Bridge(
                name="fake-harness",
                description="a fake",
                package="agent-comms-fake",
                push_path=PushPath.TOOL_RESULTS,
                status=status,
            )
        )
"""


# ---------------------------------------------------------------- the manager and the built-in plugin


def test_builtin_jsonl_registers_even_when_no_plugins_load() -> None:
    pm = get_plugin_manager(load="")
    assert pm.list_name_plugin() == [("jsonl", jsonl)]
    assert pm.list_plugin_distinfo() == []
    assert pm.project_name == "agent_comms"


def test_every_hook_has_a_spec_and_check_pending_passes() -> None:
    pm = get_plugin_manager(load="")
    pm.check_pending()
    specs = sorted(name for name in dir(pm.hook) if not name.startswith("_"))
    assert specs == ["register_bridges"]  # the one hook: everything else is on the Bridge a plugin registers
    assert pm.hook.register_bridges.spec is not None
    assert pm.hook.register_bridges.spec.opts["firstresult"] is False
    assert [impl.plugin_name for impl in pm.hook.register_bridges.get_hookimpls()] == ["jsonl"]


def test_list_plugins_describes_the_builtin() -> None:
    assert list_plugins(get_plugin_manager(load="")) == [JSONL_INFO]


def test_list_harnesses_and_find_harness() -> None:
    pm = get_plugin_manager(load="")
    jsonl_info = HarnessInfo(
        name="jsonl",
        description="line-delimited JSON on stdin/stdout, for harnesses that spawn a process and relay through it",
        push=True,
        package="agent-comms",
    )
    assert list_harnesses(pm) == [jsonl_info]
    assert find_harness(pm, "jsonl") == jsonl_info
    assert list_bridges(pm) == [jsonl.BRIDGE]
    assert find_bridge(pm, "jsonl") is jsonl.BRIDGE
    assert (jsonl.BRIDGE.serve, jsonl.BRIDGE.push_path) == (jsonl.serve, PushPath.RELAY)


def test_find_harness_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_COMMS_LOAD_PLUGINS", raising=False)
    pm = get_plugin_manager(load="")
    with pytest.raises(PluginError) as excinfo:
        find_harness(pm, "codex")
    assert str(excinfo.value) == (
        "no installed plugin bridges the harness 'codex' (installed: jsonl); `pip install agent-comms-codex` adds it"
    )
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "")
    with pytest.raises(PluginError, match="AGENT_COMMS_LOAD_PLUGINS='' may be leaving its plugin out"):
        find_harness(pm, "codex")


def test_the_builtin_is_declared_as_an_entry_point_of_agent_comms() -> None:
    [entry] = [ep for ep in metadata.entry_points(group="agent_comms") if ep.name == "jsonl"]
    assert entry.value == "agent_comms.bridges.jsonl"
    assert entry.dist is not None
    assert entry.dist.name == "agent-comms"


# ---------------------------------------------------------------- AGENT_COMMS_LOAD_PLUGINS, a real installed plugin


@pytest.mark.usefixtures("echo_installed")
def test_unset_loads_every_entry_point_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent_comms_echo_example

    monkeypatch.delenv("AGENT_COMMS_LOAD_PLUGINS", raising=False)
    pm = get_plugin_manager()
    assert pm.get_plugin("echo") is agent_comms_echo_example
    [dist] = [d for p, d in pm.list_plugin_distinfo() if p is agent_comms_echo_example]
    assert (dist.project_name, dist.version) == ("agent-comms-echo-example", "0.1.0")
    assert find_harness(pm, "echo-example").package == "agent-comms-echo-example"


@pytest.mark.usefixtures("echo_installed")
def test_empty_loads_no_entry_point_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "")
    pm = get_plugin_manager()
    assert [name for name, _ in pm.list_name_plugin()] == ["jsonl"]
    assert pm.get_plugin("echo") is None


@pytest.mark.usefixtures("echo_installed")
@pytest.mark.parametrize("value", ["echo", " echo , ", "jsonl,echo"])
def test_named_plugins_load(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", value)
    pm = get_plugin_manager()
    assert [name for name, _ in pm.list_name_plugin()] == ["jsonl", "echo"]
    assert [info.name for info in list_plugins(pm)] == ["jsonl", "echo"]


@pytest.mark.usefixtures("echo_installed")
def test_naming_only_the_builtin_loads_no_entry_point_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "jsonl")
    assert [name for name, _ in get_plugin_manager().list_name_plugin()] == ["jsonl"]


def test_unknown_names_are_an_error_naming_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "nope,jsonl, zzz")
    with pytest.raises(PluginError) as excinfo:
        get_plugin_manager()
    assert str(excinfo.value).startswith("AGENT_COMMS_LOAD_PLUGINS names plugins that are not installed: nope, zzz (")


def test_the_argument_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "nope")
    assert [name for name, _ in get_plugin_manager(load="").list_name_plugin()] == ["jsonl"]


# ---------------------------------------------------------------- distributions made by the tests


def test_an_installed_distribution_is_listed_with_its_version(install_fake: InstallFake) -> None:
    install_fake("fake", "agent_comms_fake_listed", HARNESS_PLUGIN, dist="agent-comms-fake", version="2.5")
    pm = get_plugin_manager(load="fake")
    assert list_plugins(pm) == [
        JSONL_INFO,
        PluginInfo(
            name="fake",
            distribution="agent-comms-fake",
            version="2.5",
            hooks=("status",),
            harness="fake-harness",
            builtin=False,
            push=("tool-results",),
        ),
    ]
    status = find_bridge(pm, "fake-harness").status
    assert status is not None
    assert status(Path("/nonexistent")) == "configured"
    assert find_bridge(pm, "jsonl").status is None
    assert find_harness(pm, "fake-harness").push is False


def test_a_misspelt_hook_is_an_error_naming_the_plugin(install_fake: InstallFake) -> None:
    install_fake(
        "typo",
        "agent_comms_fake_typo",
        """
        from agent_comms.hookspecs import hookimpl

        @hookimpl
        def register_bridge(register):
            return None
        """,
    )
    with pytest.raises(PluginError) as excinfo:
        get_plugin_manager(load="typo")
    assert str(excinfo.value).startswith("plugin 'typo': ")
    assert "register_bridge" in str(excinfo.value)


def test_a_hook_argument_not_in_the_spec_is_an_error(install_fake: InstallFake) -> None:
    install_fake(
        "extra-arg",
        "agent_comms_fake_extra_arg",
        """
        from agent_comms.hookspecs import hookimpl

        @hookimpl
        def register_bridges(register, loop):
            return None
        """,
    )
    with pytest.raises(
        PluginError,
        match=r"(?s)^plugin 'extra-arg': .*\{'loop'\} are declared in the hookimpl",
    ):
        get_plugin_manager(load="extra-arg")


def test_a_plugin_that_fails_to_import_is_an_error_naming_it(install_fake: InstallFake) -> None:
    install_fake("exploding", "agent_comms_fake_exploding", "raise RuntimeError('boom')\n")
    with pytest.raises(PluginError) as excinfo:
        get_plugin_manager(load="exploding")
    assert str(excinfo.value) == (
        "plugin 'exploding' failed to load: RuntimeError: boom (leave it out with AGENT_COMMS_LOAD_PLUGINS, "
        "or reinstall it)"
    )
    # ... and leaving it out works.
    assert [name for name, _ in get_plugin_manager(load="").list_name_plugin()] == ["jsonl"]


# ---------------------------------------------------------------- registrations


def _bridge_plugin(harness: str, *, extra: str = "") -> str:
    return f"""
        from agent_comms.hookspecs import Bridge, PushPath, hookimpl

        @hookimpl
        def register_bridges(register):
            register(Bridge(name={harness!r}, description="d", package="p", push_path=PushPath.TOOL_RESULTS))
            {extra}
        """


def test_two_plugins_registering_one_harness_is_an_error_naming_both(install_fake: InstallFake) -> None:
    install_fake("first", "agent_comms_fake_first", _bridge_plugin("twin"), dist="agent-comms-first", version="1.0")
    install_fake("second", "agent_comms_fake_second", _bridge_plugin("twin"), dist="agent-comms-second", version="2.0")
    with pytest.raises(PluginError) as excinfo:
        get_plugin_manager(load="first,second")
    assert str(excinfo.value) == (
        "the harness 'twin' is registered twice: by the plugin 'first' (agent-comms-first 1.0) and by the plugin "
        "'second' (agent-comms-second 2.0); uninstall one, or leave one out with AGENT_COMMS_LOAD_PLUGINS"
    )
    # ... and leaving one out works.
    assert find_bridge(get_plugin_manager(load="second"), "twin").package == "p"


def test_a_plugin_cannot_take_the_builtins_harness(install_fake: InstallFake) -> None:
    install_fake("mine", "agent_comms_fake_mine", _bridge_plugin("jsonl"), dist="agent-comms-mine")
    with pytest.raises(PluginError, match=r"^the harness 'jsonl' is registered twice: by the plugin 'jsonl' \(built"):
        get_plugin_manager(load="mine")


def test_one_plugin_may_register_several_harnesses_each_listed(install_fake: InstallFake) -> None:
    second = 'register(Bridge(name="two-b", description="d", package="p", push_path=PushPath.RELAY))'
    install_fake("pair", "agent_comms_fake_pair", _bridge_plugin("two-a", extra=second), dist="agent-comms-pair")
    pm = get_plugin_manager(load="pair")
    assert [bridge.name for bridge in list_bridges(pm)] == ["jsonl", "two-a", "two-b"]
    listed = [(info.name, info.harness, info.push) for info in list_plugins(pm)]
    assert listed == [
        ("jsonl", "jsonl", ("relay",)),
        ("pair", "two-a", ("tool-results",)),
        ("pair", "two-b", ("relay",)),
    ]
    assert [info.push for info in list_harnesses(pm)] == [True, False, True]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            """
            from agent_comms.hookspecs import HarnessInfo, hookimpl

            @hookimpl
            def register_bridges(register):
                register(HarnessInfo(name="old", description="d", push=False, package="p"))
            """,
            r"^plugin 'bad': register_bridges registered HarnessInfo\(name='old'.*; register takes an "
            r"agent_comms.hookspecs.Bridge$",
        ),
        (
            """
            from agent_comms.hookspecs import Bridge, PushPath, hookimpl

            @hookimpl
            def register_bridges(register):
                register(Bridge(name="Bad Name", description="d", package="p", push_path=PushPath.RELAY))
            """,
            r"^plugin 'bad': register_bridges failed: ValueError: a harness name is lowercase .*not 'Bad Name'$",
        ),
        (
            """
            from agent_comms.hookspecs import Bridge, PushPath, hookimpl

            @hookimpl
            def register_bridges(register):
                register(Bridge(name="ok", description="d", package="p", push_path=PushPath(0)))
            """,
            r"^plugin 'bad': register_bridges failed: ValueError: push_path must name at least one PushPath",
        ),
        (
            """
            from agent_comms.hookspecs import Bridge, PushPath, hookimpl

            @hookimpl
            def register_bridges(register):
                register(Bridge(name="ok", description="d", package="p", push_path=PushPath.RELAY, serve="run"))
            """,
            r"^plugin 'bad': register_bridges failed: NotCallableError: 'serve' must be callable",
        ),
        (
            """
            from agent_comms.hookspecs import Bridge, PushPath, hookimpl

            @hookimpl
            def register_bridges(register):
                return [Bridge(name="ok", description="d", package="p", push_path=PushPath.RELAY)]
            """,
            r"^plugin 'bad': register_bridges returned \[Bridge\(.*\)\]; it should call register\(Bridge\(...\)\) for "
            r"each harness and return nothing$",
        ),
        (
            """
            from agent_comms.hookspecs import hookimpl

            @hookimpl
            def register_bridges(register):
                raise KeyError("oops")
            """,
            r"^plugin 'bad': register_bridges failed: KeyError: 'oops'$",
        ),
    ],
    ids=["not-a-bridge", "bad-name", "no-push-path", "serve-not-callable", "returned-not-registered", "raises"],
)
def test_a_malformed_registration_is_an_error_naming_the_plugin(
    install_fake: InstallFake, source: str, message: str
) -> None:
    install_fake("bad", "agent_comms_fake_bad", source, dist="agent-comms-bad")
    with pytest.raises(PluginError, match=message):
        get_plugin_manager(load="bad")


def test_a_malformed_registration_fails_the_plugins_command(install_fake: InstallFake, tmp_path: Path) -> None:
    install_fake("bad", "agent_comms_fake_bad_cli", _bridge_plugin("Not Valid"), dist="agent-comms-bad")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    env["AGENT_COMMS_LOAD_PLUGINS"] = "bad"
    result = subprocess.run(
        [sys.executable, "-m", "agent_comms", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert "plugin 'bad': register_bridges failed: ValueError: a harness name is" in result.stderr


# ---------------------------------------------------------------- the push loop


class _Pusher:
    """A push function that shows (or fails to show) every event."""

    def __init__(self, *, shows: bool) -> None:
        self.shows = shows
        self.events: list[str] = []

    async def push(self, event: object) -> bool:
        self.events.append(getattr(event, "content", ""))
        await trio.lowlevel.checkpoint()
        return self.shows


@pytest.mark.parametrize(("shows", "receipt"), [(True, "read"), (False, "delivered")])
async def test_relay_marks_read_only_what_the_push_function_showed(shows: bool, receipt: str) -> None:
    pusher = _Pusher(shows=shows)
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("test", name="alice")
        bob = await mesh.agent("test", name="bob", cwd="/elsewhere")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay_deliveries, pusher.push, alice)
                sent = await bob.call({"action": "dm", "target": "alice", "content": "one"})
                await bob.call({"action": "dm", "target": "alice", "content": "two"})
                while len(pusher.events) < 2:  # noqa: ASYNC110 - the push function is the only witness
                    await trio.sleep(0.001)
                await mesh.settle()
                nursery.cancel_scope.cancel()
        assert pusher.events == ["one", "two"]
        assert alice.pending_count() == 0
        assert bob.store.state.receipt_status(sent.data["message_id"], alice.id) == receipt


# ---------------------------------------------------------------- the command line


def _cli(*args: str, load: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "AGENT_COMMS_LOAD_PLUGINS"}
    if load is not None:
        env["AGENT_COMMS_LOAD_PLUGINS"] = load
    return subprocess.run(
        [sys.executable, "-m", "agent_comms", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_plugins_json_lists_the_builtin_alone_when_none_load() -> None:
    result = _cli("plugins", "--json", load="")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [JSONL_JSON]


@pytest.mark.usefixtures("echo_installed")
def test_plugins_json_lists_installed_plugins() -> None:
    result = _cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed[0] == JSONL_JSON
    assert ECHO_JSON in listed
    result = _cli("plugins", "--json", load="echo")
    assert json.loads(result.stdout) == [JSONL_JSON, ECHO_JSON]


def test_plugins_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "")
    assert main(["plugins"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "NAME   HARNESS  DISTRIBUTION            VERSION  PUSH   HOOKS",
        f"jsonl  jsonl    agent-comms (built-in)  {agent_comms.__version__:<7}  relay  serve",
    ]


def test_plugins_with_an_unknown_name_in_the_environment_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "nope")
    assert main(["plugins"]) == 3
    assert "not installed: nope" in capsys.readouterr().err


def test_bridge_for_an_unknown_harness_names_the_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENT_COMMS_LOAD_PLUGINS", raising=False)
    assert main(["bridge", "no-such-harness"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agent-comms: no installed plugin bridges the harness 'no-such-harness'")
    assert "`pip install agent-comms-no-such-harness` adds it" in err


def test_bridge_for_an_unknown_harness_exits_2_as_a_process() -> None:
    result = _cli("bridge", "no-such-harness", load="")
    assert result.returncode == 2
    assert "pip install agent-comms-no-such-harness" in result.stderr
    assert result.stdout == ""


def test_bridge_for_a_harness_without_a_tool_hook_is_a_configuration_error(
    install_fake: InstallFake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_fake("no-serve", "agent_comms_fake_no_serve", HARNESS_PLUGIN)  # a bridge with a status hook only
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "no-serve")
    assert main(["bridge", "fake-harness"]) == 3
    assert "the plugin of the harness 'fake-harness' has no tool hook (serve)" in capsys.readouterr().err


def test_bridge_option_must_be_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["bridge", "jsonl", "--option", "novalue"])
    assert excinfo.value.code == 2
    assert "expected KEY=VALUE, not 'novalue'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "example"),
    [
        ("plugins", "example: agent-comms plugins --json"),
        ("bridge", "| agent-comms bridge jsonl --name me"),
    ],
)
def test_subcommand_help_has_an_example(command: str, example: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main([command, "--help"])
    assert excinfo.value.code == 0
    assert example in capsys.readouterr().out


# ---------------------------------------------------------------- the package's lazy exports


def test_exports_are_the_defining_objects() -> None:
    from agent_comms.events import format_delivery_event
    from agent_comms.tool import CommsTool

    assert agent_comms.hookimpl is hookspecs.hookimpl
    assert agent_comms.CommsTool is CommsTool
    assert agent_comms.format_delivery_event is format_delivery_event
    assert isinstance(agent_comms.hookimpl, pluggy.HookimplMarker)
    assert set(agent_comms.__all__) <= set(dir(agent_comms))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        agent_comms.nope  # noqa: B018


def test_importing_the_plugin_api_does_not_import_trio() -> None:
    code = (
        "import sys; from agent_comms import hookimpl, HarnessInfo, BridgeOptions; "
        "from agent_comms.hookspecs import Bridge, PushPath; print('trio' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
