"""The goka-ray command without a Ray cluster: argument checks, graph loading, help, which
cluster it would use, and the messages a user gets (run as a subprocess where the user would)."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from goka_ray.core.graph import GroupGraph
from goka_ray.errors import ConfigError, GraphError, did_you_mean
from goka_ray.ray.cluster import NoClusterError, find_cluster
from goka_ray.tools.cli import build_parser, load_graph, main

APP = """
from goka_ray import Input, Persist, codecs, define_group

def count(ctx, msg):
    ctx.set_value((ctx.value() or 0) + 1)

graph = define_group("app-counter", Input("app-clicks", codecs.String(), count),
                     Persist(codecs.Int()))

def make_graph():
    return graph

def broken_factory():
    return {}["missing"]

not_a_graph = 42
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "cli_app_mod.py").write_text(APP)
    (tmp_path / "cli_bad_syntax.py").write_text("def graph(:\n    pass\n")
    (tmp_path / "cli_raises.py").write_text("x = 1\nraise RuntimeError('no config here')\n")
    (tmp_path / "cli_needs_dep.py").write_text("import not_installed_dep_xyz\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "cli_app_mod"


def test_load_graph_by_name_or_factory(app: str) -> None:
    g1 = load_graph(f"{app}:graph")
    g2 = load_graph(f"{app}:make_graph")
    assert isinstance(g1, GroupGraph) and g1.group == "app-counter"
    assert g2 is g1


def test_load_graph_errors_say_what_to_do(app: str) -> None:
    with pytest.raises(ConfigError, match="expected MODULE:NAME"):
        load_graph("no_colon_here")
    with pytest.raises(ConfigError, match="cannot import module 'missing_mod_xyz': no such module"):
        load_graph("missing_mod_xyz:graph")
    with pytest.raises(ConfigError, match=r"syntax error in .*cli_bad_syntax.py, line 1"):
        load_graph("cli_bad_syntax:graph")
    with pytest.raises(
        ConfigError, match=r"importing it raised RuntimeError: no config here \(.*cli_raises.py:2\)"
    ):
        load_graph("cli_raises:graph")
    with pytest.raises(ConfigError, match="it imports 'not_installed_dep_xyz', which is not"):
        load_graph("cli_needs_dep:graph")
    with pytest.raises(ConfigError, match=r"has no 'grpah'\. Did you mean 'graph'\?"):
        load_graph(f"{app}:grpah")
    with pytest.raises(GraphError, match=r"is a callback taking \(ctx, msg\), not a group graph"):
        load_graph(f"{app}:count")
    with pytest.raises(GraphError, match=r"broken_factory\(\) raised KeyError: 'missing'"):
        load_graph(f"{app}:broken_factory")
    with pytest.raises(GraphError, match="is a int, not a GroupGraph"):
        load_graph(f"{app}:not_a_graph")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (sub-)command parser by its full name, e.g. "topics create"."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _commands(sub).items()})
    return found


def test_every_command_and_argument_has_help_with_an_example() -> None:
    commands = _commands(build_parser())
    assert {"demo", "run", "status", "scale", "get", "stop", "monitor", "broker"} <= set(commands)
    assert {"topics list", "topics create", "topics describe", "topics check"} <= set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        assert f"goka-ray {name}" in text.split("\nexamples:\n")[-1], name
        assert parser.description, name
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"goka-ray {name} {action.option_strings or action.dest}"


def test_global_options_work_before_and_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--address", "h:1", "--namespace", "n", "-v", "status", "g"])
    after = parser.parse_args(["status", "g", "--address", "h:1", "--namespace", "n", "-v"])
    topics = parser.parse_args(["topics", "list", "--namespace", "n"])
    assert (before.address, before.namespace, before.verbose) == ("h:1", "n", True)
    assert (after.address, after.namespace, after.verbose) == ("h:1", "n", True)
    assert topics.namespace == "n" and topics.address is None and topics.verbose is False


def _cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # a subprocess with its own Ray temp dir: it must not find clusters of other tests
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RAY_TMPDIR": str(tmp_path)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "goka-ray"), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=tmp_path,
        timeout=120,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The command failed with exit code 2 and one line on stderr, no traceback or colours."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"goka-ray {command}: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "\x1b[" not in proc.stderr
    return lines[0]


def test_version(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--version")
    assert proc.returncode == 0
    assert re.fullmatch(
        r"goka-ray \S+ \(Ray \S+, confluent-kafka \S+, Python \S+\)\n", proc.stdout
    ), proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scale", "g", "--actors", "-1"], "argument --actors: -1 is not allowed: use a whole"),
        (["scale", "g", "--actors", "0"], "argument --actors: 0 is not allowed"),
        (
            ["scale", "g", "--num-cpus", "-1"],
            "argument --num-cpus: -1 is not allowed: use a number >= 0",
        ),
        (["scale", "g", "--partitions-per-actor", "0"], "argument --partitions-per-actor: 0 is"),
    ],
)
def test_the_cli_checks_its_arguments_before_connecting(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scale", "g", "--actors", "two"], "argument --actors: 'two' is not a whole number"),
        (["status", "--watch", "0"], "argument --watch: 0 is not allowed: use a number > 0"),
        (["run", "m:g", "--timeout", "-1"], "argument --timeout: -1 is not allowed"),
        (["monitor", "--port", "70000"], "argument --port: 70000 is not a port"),
        (["topics", "create", "t", "--partitions", "0"], "argument --partitions: 0 is not allowed"),
        (["emit", "t", "k", "v", "--count", "0"], "argument --count: 0 is not allowed"),
        (["demo", "--clicks", "-5"], "argument --clicks: -5 is not allowed"),
    ],
)
def test_every_number_is_checked_by_the_parser(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_run_at_a_callback_or_a_broken_module_is_a_one_line_answer(
    app: str, tmp_path: Path
) -> None:
    line = _one_line_error(_cli(tmp_path, "run", f"{app}:count", "--brokers", "x:1"), "run")
    assert "GraphError: cli_app_mod:count is a callback taking (ctx, msg)" in line
    assert "Group graphs it defines: graph." in line
    line = _one_line_error(_cli(tmp_path, "run", "cli_bad_syntax:graph"), "run")
    assert "ConfigError: cannot import module 'cli_bad_syntax': syntax error" in line
    line = _one_line_error(_cli(tmp_path, "run", "cli_raises:graph"), "run")
    assert "RuntimeError: no config here" in line


def test_scale_without_a_change_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scale", "clicks"]) == 2
    assert "give --actors N, --num-cpus X or --partitions-per-actor N" in capsys.readouterr().err


def test_get_of_a_foreign_table_needs_a_codec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "users", "alice"]) == 2
    err = capsys.readouterr().err
    assert "not a group table" in err and "--codec" in err


def test_run_with_a_bad_config_names_the_key(
    app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("groups:\n  app-counter:\n    actorz: 2\n")
    assert main(["run", f"{app}:graph", "--config", str(cfg), "--brokers", "x:1"]) == 2
    err = capsys.readouterr().err
    assert "groups.app-counter" in err and "actorz" in err


def test_run_without_brokers_says_how_to_set_them(
    app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{app}:graph"]) == 2
    assert "no Kafka brokers" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_run_against_an_unreachable_broker_fails_fast(
    app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    assert main(["run", f"{app}:graph", "--brokers", f"127.0.0.1:{port}"]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


def test_an_address_nobody_listens_on_fails_fast(tmp_path: Path) -> None:
    port = _free_port()
    proc = _cli(tmp_path, "--address", f"127.0.0.1:{port}", "stop", "clicks")
    line = _one_line_error(proc, "stop")
    assert f"NoClusterError: no Ray cluster answers at '127.0.0.1:{port}' (--address)" in line
    assert "ray start --head" in line


def test_without_an_address_the_cli_never_attaches_to_a_cluster_nobody_named(
    tmp_path: Path,
) -> None:
    line = _one_line_error(_cli(tmp_path, "status"), "status")
    assert "no Ray cluster named: pass --address HOST:PORT" in line
    assert "RAY_ADDRESS" in line and "ray start --head" in line


def test_a_stale_ray_start_record_is_named_not_followed(tmp_path: Path) -> None:
    port = _free_port()
    record = tmp_path / "ray" / "ray_current_cluster"
    record.parent.mkdir()
    record.write_text(f"127.0.0.1:{port}")
    line = _one_line_error(_cli(tmp_path, "status"), "status")
    assert f"no Ray cluster answers at '127.0.0.1:{port}'" in line
    assert f"started with `ray start`, recorded in {record}" in line
    assert "has stopped" in line


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to hand the file to another user")
def test_a_cluster_recorded_by_another_user_is_not_used(tmp_path: Path) -> None:
    record = tmp_path / "ray" / "ray_current_cluster"
    record.parent.mkdir()
    record.write_text("127.0.0.1:6379")
    os.chown(record, 65534, 65534)
    line = _one_line_error(_cli(tmp_path, "status"), "status")
    assert "was started by another user; not using it" in line


def test_which_cluster_address_then_ray_address_then_the_ray_start_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert find_cluster(None) is None
    record = tmp_path / "ray" / "ray_current_cluster"
    record.parent.mkdir()
    record.write_text("10.0.0.3:6379\n")
    found = find_cluster(None)
    assert found is not None and found.address == "10.0.0.3:6379"
    assert found.source == f"started with `ray start`, recorded in {record}"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    assert find_cluster(None) == type(found)("10.0.0.2:6379", "RAY_ADDRESS")
    assert find_cluster("10.0.0.1:6379") == type(found)("10.0.0.1:6379", "--address")
    assert issubclass(NoClusterError, Exception)


def test_did_you_mean_names_the_closest_known_name() -> None:
    assert did_you_mean("clicsk", ["clicks", "orders"]) == " Did you mean 'clicks'?"
    assert did_you_mean("zzz", ["clicks", "orders"]) == ""
