"""The goka-ray command without a cluster: argument errors, graph loading, helpful messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from goka_ray.core.graph import GroupGraph
from goka_ray.errors import ConfigError, GraphError
from goka_ray.tools.cli import build_parser, load_graph, main

APP = """
from goka_ray import Input, Persist, codecs, define_group

def count(ctx, msg):
    ctx.set_value((ctx.value() or 0) + 1)

graph = define_group("app-counter", Input("app-clicks", codecs.String(), count),
                     Persist(codecs.Int()))

def make_graph():
    return graph

not_a_graph = 42
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "cli_app_mod.py").write_text(APP)
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
    with pytest.raises(ConfigError, match="cannot import module 'missing_mod_xyz'"):
        load_graph("missing_mod_xyz:graph")
    with pytest.raises(ConfigError, match="group graphs it defines: graph"):
        load_graph(f"{app}:grpah")
    with pytest.raises(GraphError, match="is a int, not a GroupGraph"):
        load_graph(f"{app}:not_a_graph")


def test_parser_knows_every_command() -> None:
    parser = build_parser()
    for argv in (
        ["demo", "--clicks", "10"],
        ["run", "m:g", "--config", "c.yaml"],
        ["status"],
        ["status", "g", "--json"],
        ["scale", "g", "--actors", "3"],
        ["scale", "g", "--num-cpus", "0.5"],
        ["get", "t", "k", "--codec", "json"],
        ["stop", "g"],
        ["monitor", "--port", "0"],
    ):
        assert parser.parse_args(argv).command == argv[0]


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


def test_run_against_an_unreachable_broker_fails_fast(
    app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["run", f"{app}:graph", "--brokers", f"127.0.0.1:{port}"]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # a subprocess with its own Ray temp dir: it must not find clusters of other tests
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RAY_TMPDIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "goka_ray.tools.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_an_address_nobody_listens_on_fails_fast(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _cli(tmp_path, "--address", f"127.0.0.1:{port}", "stop", "clicks")
    assert proc.returncode == 2, proc.stderr
    assert f"no Ray cluster answers at '127.0.0.1:{port}'" in proc.stderr
    assert "ray start --head" in proc.stderr
