"""The goka-ray command and the web monitor against a real Ray cluster (`ray start --head`).

This is how users operate goka-ray on a cluster: every command is a separate process that
connects by address; the group keeps running between commands. Metrics are read from the
node's Prometheus endpoint, where the Ray dashboard reads them too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_helpers import produce_clicks, wait_until

from goka_ray.kafka.topics import TopicManager

NAMESPACE = "goka-ray-cli-tests"
PARTITIONS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """A Ray head node of its own (own temp dir), stopped with its process group."""
    # short: Ray's socket paths under the temp dir are limited to 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="grcli", dir="/tmp"))
    port, metrics = _free_port(), _free_port()
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
            "--num-cpus=2",
            f"--metrics-export-port={metrics}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: _listening(port), timeout=60, what="ray head up")
        yield {"address": address, "metrics": str(metrics), "tmp": str(temp)}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


APP = """
from goka_ray import Input, Persist, codecs, define_group

def count(ctx, msg):
    ctx.set_value((ctx.value() or 0) + 1)

def graph():
    return define_group("{group}", Input("{topic}", codecs.String(), count), Persist(codecs.Int()))
"""


class Cli:
    def __init__(self, cluster: dict[str, str], cwd: Path) -> None:
        self.address = cluster["address"]
        self.cwd = cwd
        self.env = {**os.environ, "RAY_TMPDIR": cluster["tmp"]}
        self.env.pop("RAY_ADDRESS", None)

    def argv(self, *args: str) -> list[str]:
        return [
            _bin("goka-ray"),
            "--address",
            self.address,
            "--namespace",
            NAMESPACE,
            *args,
        ]

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args),
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if ok:
            assert proc.returncode == 0, f"goka-ray {args}: {proc.stdout}\n{proc.stderr}"
        return proc

    def status(self, group: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self("status", group, "--json").stdout)


def _get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            body = resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(body) if "json" in ctype else body.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_operate_a_group_from_the_command_line(
    cluster: dict[str, str], kafka, unique: str, tmp_path: Path
) -> None:
    group, topic = f"{unique}-counter", f"{unique}-clicks"
    (tmp_path / "cli_cluster_app.py").write_text(APP.format(group=group, topic=topic))
    (tmp_path / "goka.yaml").write_text(
        f"brokers: {kafka.bootstrap_servers}\n"
        f"storage_dir: {tmp_path / 'data'}\n"
        f"groups:\n  {group}:\n    num_cpus: 0.1\n    actors: 1\n"
    )
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    cli = Cli(cluster, tmp_path)

    # run: starts on the cluster, returns once every partition runs; the group stays up
    run = cli("run", "cli_cluster_app:graph", "--config", "goka.yaml")
    assert "runs on the cluster" in run.stdout
    truth, _ = produce_clicks(kafka.bootstrap_servers, topic, 3000, users=40)

    def processed() -> int:
        return sum(p["processed"] for p in cli.status(group)["partitions"])

    wait_until(lambda: processed() == 3000, timeout=120, what="3000 clicks processed")
    status = cli.status(group)
    assert status["state"] == "running"
    assert len({p["actor_name"] for p in status["partitions"]}) == 1
    assert sum(p["keys"] for p in status["partitions"]) == len(truth)

    # the table view of `status` and `get` through a view
    table = cli("status", group).stdout
    assert group in table and "running" in table
    user, count = truth.most_common(1)[0]
    got = json.loads(cli("get", f"{group}-table", user, "--json").stdout)
    assert got == {"table": f"{group}-table", "key": user, "value": count}
    missing = cli("get", f"{group}-table", "nobody", ok=False)
    assert missing.returncode == 1 and "not in" in missing.stdout

    # scale live from 1 to 2 actors; the command returns once the moves are done
    cli("scale", group, "--actors", "2")
    status = cli.status(group)
    assert status["state"] == "running"
    assert len({p["actor_name"] for p in status["partitions"]}) == 2

    # the web monitor, a process of its own
    port = _free_port()
    monitor = subprocess.Popen(
        cli.argv("monitor", "--port", str(port)),
        cwd=tmp_path,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _listening(port), timeout=60, what="monitor up")
        code, page = _get(base + "/")
        assert code == 200 and "goka-ray monitor" in str(page) and "/api/groups" in str(page)
        code, groups = _get(base + "/api/groups")
        assert code == 200
        mine = [g for g in groups if g["group"] == group]  # type: ignore[union-attr]
        assert mine and mine[0]["state"] == "running" and mine[0]["keys"] == len(truth)
        code, detail = _get(f"{base}/api/groups/{group}")
        assert code == 200 and len(detail["partitions"]) == PARTITIONS  # type: ignore[index]
        code, tables = _get(base + "/api/tables")
        assert f"{group}-table" in tables  # type: ignore[operator]
        code, value = _get(f"{base}/api/tables/{group}-table/{user}")
        assert code == 200 and value == {
            "table": f"{group}-table",
            "key": user,
            "found": True,
            "value": count,
        }
        code, err = _get(f"{base}/api/groups/no-such-group")
        assert code == 404 and "no processor group 'no-such-group'" in err["error"]  # type: ignore[index]
    finally:
        monitor.terminate()
        monitor.wait(30)

    # metrics reach the node's Prometheus endpoint (what the Ray dashboard shows)
    def exported() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster['metrics']}/metrics") as r:
            return str(r.read().decode())

    pattern = re.compile(
        r'^ray_goka_ray_messages_in_total\{[^}]*group="' + re.escape(group) + r'"[^}]*\} (\S+)$',
        re.M,
    )

    def messages_in() -> float:
        return sum(float(v) for v in pattern.findall(exported()))

    wait_until(lambda: messages_in() >= 3000, timeout=90, what="messages_in metric exported")
    assert "ray_goka_ray_keys{" in exported()

    # stop: the group is gone, and the commands say so
    stop = cli("stop", group)
    assert "stopped" in stop.stdout
    after = cli("status", group, ok=False)
    assert after.returncode == 2
    assert f"no processor group {group!r}" in after.stderr
