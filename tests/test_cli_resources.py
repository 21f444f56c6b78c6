"""Groups on a small cluster and changed code, as a user meets them: a `ray start --head` node
with 1 CPU, every `goka-ray` command a process of its own.

The issue's case: a second group whose actors Ray could not place was "hung; replacing it"
until max_restarts failed it, because view actors a `get` had started held CPUs. Now `get`
removes its views, a start that does not fit fails at once naming the resource, a group told
to wait shows its actors as pending (never restarted) until a live scale to fewer CPUs places
it, and `run` with edited code refuses to attach unless `--upgrade`, which moves the group to
the new code with exact counts (and is refused too while one more actor does not fit).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import produce_clicks, wait_until

from goka_ray.kafka.topics import TopicManager

NAMESPACE = "goka-ray-resource-tests"
PARTITIONS = 2

APP = """
from goka_ray import Input, Persist, codecs, define_group

def count(ctx, msg):
    ctx.set_value((ctx.value() or 0) + 1)

def graph():
    return define_group("{group}", Input("{topic}", codecs.String(), count), Persist(codecs.Int()))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[dict[str, str]]:
    """A Ray head node with 1 CPU (own temp dir), stopped with its process group.

    Started again if it dies while coming up: on a loaded machine Ray's raylet gives up on
    its metrics agent ("Timed out waiting for file metrics_agent_port") now and then."""
    for _ in range(3):
        temp = Path(tempfile.mkdtemp(prefix="grres", dir="/tmp"))
        port = _free_port()
        env = {**os.environ, "RAY_TMPDIR": str(temp)}
        env.pop("RAY_ADDRESS", None)
        head = subprocess.Popen(
            [
                _bin("ray"),
                "start",
                "--head",
                "--block",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={temp}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            if _accepts_drivers(head, port, env):
                yield {"address": f"127.0.0.1:{port}", "tmp": str(temp)}
                return
        finally:
            _stop(head)
    raise AssertionError("the Ray head did not come up in 3 attempts")


def _stop(head: subprocess.Popen[bytes]) -> None:
    """SIGTERM the head's process group (the GCS, raylet and workers), SIGKILL if it hangs."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(10)
    except ProcessLookupError:
        return  # every process of the group has ended
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def _accepts_drivers(head: subprocess.Popen[bytes], port: int, env: dict[str, str]) -> bool:
    """Whether the head accepts a driver (the GCS listens before the node is ready)."""
    probe = f"from goka_ray.ray.cluster import connect; connect({NAMESPACE!r}, '127.0.0.1:{port}')"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and head.poll() is None:
        if _listening(port):
            done = subprocess.run(
                [sys.executable, "-c", probe], env=env, capture_output=True, timeout=120
            )
            if done.returncode == 0:
                return True
        time.sleep(1)
    return False


class Cli:
    def __init__(self, cluster: dict[str, str], cwd: Path, brokers: str) -> None:
        self.address = cluster["address"]
        self.cwd = cwd
        self.brokers = brokers
        self.env = {**os.environ, "RAY_TMPDIR": cluster["tmp"]}
        self.env.pop("RAY_ADDRESS", None)

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        argv = [_bin("goka-ray"), "--address", self.address, "--namespace", NAMESPACE, *args]
        proc = subprocess.run(
            argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == code, f"goka-ray {args}: {proc.stdout}\n{proc.stderr}"
        return proc

    def app(self, name: str, group: str, topic: str, **settings: object) -> str:
        """Write the module and config of a group; returns the config file's name."""
        (self.cwd / f"{name}.py").write_text(APP.format(group=group, topic=topic))
        lines = "".join(f"    {k}: {v}\n" for k, v in settings.items())
        config = f"{name}.yaml"
        (self.cwd / config).write_text(
            f"brokers: {self.brokers}\n"
            f"storage_dir: {self.cwd / 'data'}\n"
            f"groups:\n  {group}:\n{lines}"
        )
        return config

    def run(self, name: str, *more: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        return self(
            "run", f"{name}:graph", "--config", f"{name}.yaml", "--timeout", "120", *more, code=code
        )


@pytest.fixture(scope="module")
def driver(small_cluster: dict[str, str]) -> Iterator[None]:
    """This test process connected to the node too, to wait on groups without a process per
    poll; what the user sees is read through the CLI."""
    import ray

    from goka_ray.ray.cluster import connect

    connect(NAMESPACE, small_cluster["address"], logging_level=logging.ERROR)
    yield
    ray.shutdown()


def status(group: str) -> dict:  # type: ignore[type-arg]
    from goka_ray.ray.processor import Processor

    return Processor.attach(group, namespace=NAMESPACE).status().as_dict()


def processed(group: str) -> int:
    return sum(p["processed"] for p in status(group)["partitions"])


class Monitor:
    """`goka-ray monitor` in a process of its own, read through its JSON API."""

    def __init__(self, cluster: dict[str, str], cwd: Path) -> None:
        self.port = _free_port()
        env = {**os.environ, "RAY_TMPDIR": cluster["tmp"]}
        env.pop("RAY_ADDRESS", None)
        argv = [_bin("goka-ray"), "--address", cluster["address"], "--namespace", NAMESPACE]
        argv += ["monitor", "--port", str(self.port), "--refresh", "1", "--view-idle", "2"]
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: _listening(self.port), timeout=60, what="monitor up")

    def api(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=90) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path}: {exc.code} {exc.read().decode()}") from None

    def group(self, name: str) -> dict:  # type: ignore[type-arg]
        """The group's entry of /api/groups."""
        return next(g for g in self.api("/api/groups") if g["group"] == name)


@pytest.fixture
def monitor(small_cluster: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """Starts a Monitor when called; ends it at teardown."""
    started: list[Monitor] = []

    def start() -> Monitor:
        started.append(Monitor(small_cluster, tmp_path))
        return started[-1]

    yield start
    for m in started:
        m.proc.terminate()
        m.proc.wait(30)


def test_groups_on_a_one_cpu_cluster_and_an_edited_group(
    small_cluster: dict[str, str],
    driver: None,
    monitor: Callable[[], Monitor],
    kafka,
    unique: str,
    tmp_path: Path,
) -> None:
    from goka_ray.ray.cluster import list_groups, list_views

    brokers = kafka.bootstrap_servers
    cli = Cli(small_cluster, tmp_path, brokers)
    groups = {n: (f"{unique}-{n}", f"{unique}-{n}-in") for n in ("one", "two", "big", "late")}
    with TopicManager(brokers) as topics:
        for _, topic in groups.values():
            topics.ensure_stream(topic, PARTITIONS)

    # 0.6 of the 1 CPU for the first group
    group_one = groups["one"][0]
    cli.app("one", *groups["one"], actors=2, num_cpus=0.3)
    cli.run("one")
    truth, _ = produce_clicks(brokers, groups["one"][1], 600, users=12, seed=1)
    wait_until(lambda: processed(group_one) == 600, 120, "600 clicks processed")
    # reading through a view (0.1 CPU) must not keep that CPU once the command is done
    user, count = truth.most_common(1)[0]
    got = json.loads(cli("get", f"{group_one}-table", user, "--json").stdout)
    assert got["value"] == count
    # so the second group fits exactly what is left
    cli.app("two", *groups["two"], actors=1, num_cpus=0.4)
    cli.run("two")

    # nothing left: a third group fails at once, saying what is missing and what to do
    cli.app("big", *groups["big"], actors=2, num_cpus=0.25)
    started = time.monotonic()
    big = cli.run("big", code=2)
    print(f"\nrefused start: {time.monotonic() - started:.1f}s (the command, Ray connect included)")
    error = big.stderr.strip()
    assert "\n" not in error, error
    assert error.startswith("goka-ray run: error: InsufficientResourcesError: ")
    assert f"group '{groups['big'][0]}' cannot start" in error
    assert "ask for 0.25 CPU each (0.5 CPU in all)" in error
    assert "0 CPU free (of 1 CPU" in error
    assert "fewer actors" in error and "add nodes" in error
    assert "on_insufficient_resources: wait" in error
    assert groups["big"][0] not in list_groups(NAMESPACE), "a refused start leaves nothing"

    # a group told to wait for resources: pending, never replaced, never restarted
    late_group = groups["late"][0]
    cli.app("late", *groups["late"], actors=1, num_cpus=0.3, on_insufficient_resources="wait")
    waited = cli.run("late", "--timeout", "8", code=3)  # 8 s: many status rounds
    assert "waits for resources: each asks 0.3 CPU" in waited.stderr
    late = json.loads(cli("status", late_group, "--json").stdout)
    assert [p["state"] for p in late["partitions"]] == ["pending"] * PARTITIONS
    assert [p["restarts"] for p in late["partitions"]] == [0] * PARTITIONS
    assert "1 actor waits for resources: each asks 0.3 CPU, the cluster has 0 CPU free" in (
        late["waiting"] or ""
    )
    table = cli("status", late_group).stdout
    assert "pending" in table and "waiting: 1 actor waits for resources" in table
    # the web monitor says the same (it runs on until the end of the test)
    web = monitor()
    wait_until(lambda: web.group(late_group)["waiting"] is not None, 60, "the monitor's sample")
    assert "1 actor waits for resources" in web.group(late_group)["waiting"]
    # as the message says: ask less per actor. A live scale to 0 CPUs: the new actor fits,
    # the move to the pending one is called off and that one removed; still no restart
    pending_actor = late["partitions"][0]["actor_name"]
    cli("scale", late_group, "--num-cpus", "0")
    late = status(late_group)
    assert late["state"] == "running" and late["waiting"] is None
    assert [p["state"] for p in late["partitions"]] == ["running"] * PARTITIONS
    assert [p["restarts"] for p in late["partitions"]] == [0] * PARTITIONS
    assert pending_actor not in {p["actor_name"] for p in late["partitions"]}

    # the first group's code edited: `run` refuses to attach, and says how to replace it
    module = tmp_path / "one.py"
    module.write_text(
        module.read_text().replace("(ctx.value() or 0) + 1", "1 + (ctx.value() or 0)")
    )
    before = status(group_one)
    refused = cli.run("one", code=2)
    assert refused.stderr.startswith("goka-ray run: error: CodeChangedError: ")
    assert "runs other code" in refused.stderr
    assert f"Input('{groups['one'][1]}') callback changed" in refused.stderr
    assert "--upgrade" in refused.stderr and f"goka-ray stop {group_one}" in refused.stderr
    assert status(group_one)["code"] == before["code"], "nothing changed"
    # an upgrade needs one more actor (0.3 CPU) while none is free: refused, unchanged
    short = cli.run("one", "--upgrade", code=2)
    assert f"group '{group_one}' cannot upgrade" in short.stderr
    assert "the partition actor to start asks for 0.3 CPU, but the Ray cluster has 0 CPU free" in (
        short.stderr
    )
    assert status(group_one)["code"] == before["code"]
    cli("stop", groups["two"][0])
    more, _ = produce_clicks(brokers, groups["one"][1], 400, users=12, seed=2)
    started = time.monotonic()
    upgraded = cli.run("one", "--upgrade")
    print(f"run --upgrade of {PARTITIONS} partitions: {time.monotonic() - started:.1f}s")
    assert "upgrading it to code" in upgraded.stdout
    after = status(group_one)
    assert after["code"] != before["code"] and after["state"] == "running"
    assert {p["code"] for p in after["partitions"]} == {after["code"]}
    assert [p["restarts"] for p in after["partitions"]] == [0] * PARTITIONS
    truth.update(more)
    wait_until(lambda: processed(group_one) >= 1000, 120, "1000 clicks processed")
    time.sleep(1)
    assert processed(group_one) == 1000, "totals survive the moves; nothing processed twice"
    got = json.loads(cli("get", f"{group_one}-table", user, "--json").stdout)
    assert got["value"] == truth[user]
    wait_until(lambda: web.group(group_one)["code"] == after["code"], 30, "the monitor's sample")
    assert web.group(group_one)["processed"] == 1000, "the monitor shows the totals too"
    # a key read in the monitor starts a view; it is removed once idle (--view-idle 2)
    read = web.api(f"/api/tables/{group_one}-table/{user}")
    assert read["value"] == truth[user]
    assert f"{group_one}-table" in list_views(NAMESPACE)
    wait_until(lambda: not list_views(NAMESPACE), 30, "the monitor's idle view removed")
    cli("stop", group_one)


def running(group: str) -> bool:
    current = status(group)
    return current["state"] == "running" and all(
        p["state"] == "running" for p in current["partitions"]
    )
