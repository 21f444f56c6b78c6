"""The goka-ray command and the web monitor against a real Ray cluster (`ray start --head`).

This is how users operate goka-ray on a cluster: every command is a separate process that
connects by address; the group keeps running between commands. Metrics are read from the
node's Prometheus endpoint, where the Ray dashboard reads them too.
"""

from __future__ import annotations

import ast
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
from urllib.parse import quote

import pytest
from kafka_helpers import produce, produce_clicks, wait_until

from goka_ray.kafka.clients import make_producer
from goka_ray.kafka.topics import TopicManager

NAMESPACE = "goka-ray-cli-tests"
MAC = b"\x00\x85mac"  # a key that is not UTF-8
PARTITIONS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _start_head(
    temp: Path, port: int, metrics: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
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


def _stop_head(head: subprocess.Popen[bytes]) -> None:
    """Stop the head's whole process group (never `ray stop`: it stops every Ray here)."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """A Ray head node of its own (own temp dir), stopped with its process group.

    On a loaded machine `ray start` sometimes gives up on its own raylet ("the current node
    timed out during startup", a fixed 30 s) and exits: then it is started once more.
    """
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    for attempt in range(2):
        # short: Ray's socket paths under the temp dir are limited to 107 bytes
        temp = Path(tempfile.mkdtemp(prefix="grcli", dir="/tmp"))
        port, metrics = _free_port(), _free_port()
        env["RAY_TMPDIR"] = str(temp)
        address = f"127.0.0.1:{port}"
        head = _start_head(temp, port, metrics, env)
        ready = [_bin("goka-ray"), "--address", address, "--namespace", NAMESPACE, "status"]

        def accepts_drivers(head: subprocess.Popen[bytes] = head, ready: list[str] = ready) -> bool:
            if head.poll() is not None:
                return True  # it gave up: decided below
            done = subprocess.run(ready, env=env, capture_output=True, timeout=120)
            return done.returncode == 0

        # the GCS answers before the head's raylet has registered: wait until a driver connects
        wait_until(accepts_drivers, timeout=240, what="ray head accepts drivers")
        if head.poll() is None:
            break
        _stop_head(head)
        assert attempt == 0, "`ray start --head` exited twice before a driver could connect"
    try:
        yield {"address": address, "metrics": str(metrics), "tmp": str(temp)}
    finally:
        _stop_head(head)


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


POISONED = """
from goka_ray import Input, Persist, codecs, define_group

def count(ctx, msg):
    if ctx.key == "poison":
        raise ValueError("a poisoned click")
    ctx.set_value((ctx.value() or 0) + 1)

def graph():
    return define_group("{group}", Input("{topic}", codecs.String(), count), Persist(codecs.Int()))
"""

#: what Ray prints by itself when a driver connects; the CLI shows it only with -v
RAY_NOISE = ("Connecting to existing Ray cluster", "Token authentication", "Connected to Ray")


class Cli:
    def __init__(self, cluster: dict[str, str], cwd: Path, namespace: str = NAMESPACE) -> None:
        self.address = cluster["address"]
        self.cwd = cwd
        self.namespace = namespace
        self.env = {**os.environ, "RAY_TMPDIR": cluster["tmp"]}
        self.env.pop("RAY_ADDRESS", None)

    def argv(self, *args: str) -> list[str]:
        return [
            _bin("goka-ray"),
            "--address",
            self.address,
            "--namespace",
            self.namespace,
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
        for noise in RAY_NOISE:
            assert noise not in proc.stdout + proc.stderr, (args, proc.stderr)
        return proc

    def status(self, group: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self("status", group, "--json", ok=False).stdout)

    def announced(self) -> str:
        """The line a changing command starts with: which cluster and namespace."""
        return f"Ray cluster {self.address} (--address), namespace {self.namespace!r}"

    def views(self) -> list[str]:
        """Tables served by view actors in the namespace (read by a Python driver)."""
        code = (
            "import logging; from goka_ray.ray.cluster import connect, list_views; "
            f"connect({self.namespace!r}, {self.address!r}, logging_level=logging.ERROR); "
            f"print(list_views({self.namespace!r}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return list(ast.literal_eval(out.stdout.strip().splitlines()[-1]))


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
    assert run.stdout.startswith(cli.announced()), run.stdout
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
    key_hex = user.encode().hex()
    assert got == {"table": f"{group}-table", "key": user, "key_hex": key_hex, "value": count}
    assert cli.views() == []  # the views `get` started are gone: they held cluster resources
    missing = cli("get", f"{group}-table", "nobody", ok=False)
    assert missing.returncode == 1 and "not in" in missing.stdout
    # a key that is not UTF-8 (as a Goka service may write it), given to `get` as hex
    producer = make_producer(kafka.bootstrap_servers)
    producer.produce(topic, key=MAC, value=b"click")
    assert producer.flush(30) == 0
    wait_until(lambda: processed() == 3001, timeout=60, what="the Goka key processed")
    got = json.loads(cli("get", f"{group}-table", MAC.hex(), "--hex", "--json").stdout)
    mac_text = "\x00\udc85mac"
    assert got == {"table": f"{group}-table", "key": mac_text, "key_hex": MAC.hex(), "value": 1}
    bad = cli("get", f"{group}-table", "zz", "--hex", ok=False)
    assert bad.returncode == 2 and "--hex 'zz': give the key as hex digits" in bad.stderr

    # scale live from 1 to 2 actors; the command returns once the moves are done
    scale = cli("scale", group, "--actors", "2")
    assert scale.stdout.startswith(cli.announced())
    assert f"scaling {group}: actors 1 -> 2" in scale.stdout
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
        assert mine and mine[0]["state"] == "running" and mine[0]["keys"] == len(truth) + 1
        code, detail = _get(f"{base}/api/groups/{group}")
        assert code == 200 and len(detail["partitions"]) == PARTITIONS  # type: ignore[index]
        code, tables = _get(base + "/api/tables")
        assert f"{group}-table" in tables  # type: ignore[operator]
        code, value = _get(f"{base}/api/tables/{group}-table/{user}")
        assert code == 200 and value == {
            "table": f"{group}-table",
            "key": user,
            "key_hex": key_hex,
            "found": True,
            "value": count,
        }
        code, value = _get(f"{base}/api/tables/{group}-table/{quote(MAC)}")  # %00%85mac
        assert code == 200 and value == {
            "table": f"{group}-table",
            "key": mac_text,
            "key_hex": MAC.hex(),
            "found": True,
            "value": 1,
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
    # global options may follow the command; a misspelt group gets a suggestion
    typo = subprocess.run(
        [
            _bin("goka-ray"),
            "status",
            group[:-1],
            "--address",
            cli.address,
            "--namespace",
            NAMESPACE,
        ],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert typo.returncode == 2
    assert f"Did you mean {group!r}?" in typo.stderr, typo.stderr

    stop = cli("stop", group)
    assert stop.stdout.startswith(cli.announced())
    assert "stopped" in stop.stdout
    after = cli("status", group, ok=False)
    assert after.returncode == 2
    assert f"no processor group {group!r}" in after.stderr


def _one_line_error(proc: subprocess.CompletedProcess[str], command: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"goka-ray {command}: error: "), proc.stderr
    for ray_text in ("Traceback", "\x1b[", "ray::", "RayTaskError", "pid="):
        assert ray_text not in proc.stderr, proc.stderr
    return lines[0]


def test_errors_raised_in_the_cluster_reach_the_user_as_one_line(
    cluster: dict[str, str], kafka, unique: str, tmp_path: Path
) -> None:
    group, topic = f"{unique}-counter", f"{unique}-clicks"
    (tmp_path / "cli_errors_app.py").write_text(APP.format(group=group, topic=topic))
    config = tmp_path / "goka.yaml"
    config.write_text(
        f"brokers: {kafka.bootstrap_servers}\nstorage_dir: {tmp_path / 'data'}\n"
        f"groups:\n  {group}:\n    num_cpus: 0.1\n    actors: 1\n"
    )
    cli = Cli(cluster, tmp_path)
    # the coordinator (an actor) finds the input topic missing
    run = cli("run", "cli_errors_app:graph", "--config", "goka.yaml", ok=False)
    line = _one_line_error(run, "run")
    assert f"TopicError: group {group!r}: missing topic(s) [{topic!r}]" in line
    assert f"goka-ray topics create {topic} --partitions N" in line
    # (create_topics: true, the other way out it names, is tested in test_ray_runtime)


def test_run_wait_updates_one_table_in_place_on_an_80_column_terminal(
    cluster: dict[str, str], kafka, unique: str, tmp_path: Path
) -> None:
    import fcntl
    import pty
    import struct
    import termios
    import time

    group, topic = f"{unique}-counter", f"{unique}-clicks"
    (tmp_path / "cli_wait_app.py").write_text(APP.format(group=group, topic=topic))
    (tmp_path / "goka.yaml").write_text(
        f"brokers: {kafka.bootstrap_servers}\nstorage_dir: {tmp_path / 'data'}\n"
        f"groups:\n  {group}:\n    num_cpus: 0.1\n    actors: 1\n"
    )
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    cli = Cli(cluster, tmp_path)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 80, 0, 0))
    env = {**cli.env, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    proc = subprocess.Popen(
        cli.argv(
            "run", "cli_wait_app:graph", "--config", "goka.yaml", "--wait", "--interval", "0.5"
        ),
        cwd=tmp_path,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    screen = b""

    def read_for(seconds: float) -> None:
        nonlocal screen
        import select

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    return

    try:
        deadline = time.monotonic() + 180
        while b"Ctrl-C stops the group" not in screen and time.monotonic() < deadline:
            read_for(1)
        produce_clicks(kafka.bootstrap_servers, topic, 500, users=20)
        read_for(4)  # several updates at 0.5 s
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        read_for(2)
        assert proc.wait(120) == 0
        read_for(1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(master)
    text = screen.decode(errors="replace")
    live = text.split("Ctrl-C stops the group", 1)[1]
    title = f"group {group}: running"
    renders = live.count(title)
    assert renders >= 3, text[-3000:]
    # every render after the first moves the cursor back up over the previous one (rich Live)
    chunks = live.split(title)[1:-1]
    assert all(re.search(r"\x1b\[\d*A", chunk) for chunk in chunks), chunks[:2]
    assert "stopping the group" in live
    # the table fits 80 columns: nothing cut off, the dropped columns are named
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", live)
    assert "not shown (too narrow)" in plain
    for line in plain.replace("\r", "\n").splitlines():
        assert len(line) <= 80, line
        assert "…" not in line, line
    assert cli("status", ok=False).stdout.count(group) == 0


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system's Chromium (Debian package ``chromium``), installed when missing (root)."""
    import shutil

    path = shutil.which("chromium")
    if path is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        path = shutil.which("chromium")
    assert path, "Chromium is missing and `apt-get install -y chromium` did not install it"
    return path


def test_monitor_in_a_browser_shows_a_failed_group_charts_and_an_empty_namespace(
    cluster: dict[str, str], kafka, unique: str, tmp_path: Path, chromium: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    namespace = f"goka-ray-monitor-{unique}"
    ok, bad = f"{unique}-ok", f"{unique}-bad"
    ok_topic, bad_topic = f"{unique}-ok-clicks", f"{unique}-bad-clicks"
    (tmp_path / "monitor_ok.py").write_text(APP.format(group=ok, topic=ok_topic))
    (tmp_path / "monitor_bad.py").write_text(POISONED.format(group=bad, topic=bad_topic))
    (tmp_path / "goka.yaml").write_text(
        f"brokers: {kafka.bootstrap_servers}\nstorage_dir: {tmp_path / 'data'}\ngroups:\n"
        + "".join(f"  {g}:\n    num_cpus: 0.1\n    actors: 1\n" for g in (ok, bad))
    )
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(ok_topic, 2)
        topics.ensure_stream(bad_topic, 2)
    cli = Cli(cluster, tmp_path, namespace=namespace)
    cli("run", "monitor_ok:graph", "--config", "goka.yaml")
    cli("run", "monitor_bad:graph", "--config", "goka.yaml")
    produce(kafka.bootstrap_servers, bad_topic, [("alice", b"click"), ("poison", b"click")])
    wait_until(lambda: cli.status(bad)["state"] == "failed", timeout=120, what="bad group failed")
    # the CLI: status shows the failure with its coordinates and exits with 1
    status = cli("status", bad, ok=False)
    assert status.returncode == 1
    shown = " ".join(status.stdout.split())  # the error wraps at the table's width
    assert f"failed on {bad_topic}[" in shown and "key='poison'" in shown, status.stdout
    # the coordinator refuses to scale a failed group: its error reaches the user as one line
    line = _one_line_error(cli("scale", bad, "--actors", "2", ok=False), "scale")
    assert f"GokaRayError: group {bad} is failed; cannot scale it" in line

    port = _free_port()
    monitor = subprocess.Popen(
        cli.argv("monitor", "--port", str(port), "--refresh", "0.5"),
        cwd=tmp_path,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    problems: list[str] = []
    # screenshots to look at: GOKA_RAY_SCREENSHOTS=dir keeps them where pytest's tmp dirs rotate
    shots = Path(os.environ.get("GOKA_RAY_SCREENSHOTS") or tmp_path / "screenshots")
    try:
        wait_until(lambda: _listening(port), timeout=60, what="monitor up")
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "response",
                lambda r: r.status >= 400 and problems.append(f"HTTP {r.status} {r.url}"),
            )
            page.goto(f"http://127.0.0.1:{port}/")
            # clicks flow into the running group while the page samples them
            for _ in range(6):
                produce_clicks(kafka.bootstrap_servers, ok_topic, 200, users=10)
                page.wait_for_timeout(500)

            # what a person sees: the namespace, when it was updated, the failure up front
            expect(page.locator("#namespace")).to_have_text(namespace)
            expect(page.locator("#cluster")).to_have_text(cluster["address"])
            expect(page.locator("#updated")).to_have_text(
                re.compile(r"last updated \d\d:\d\d:\d\d")
            )
            failed = page.locator(f"#group-{bad}")
            expect(failed.locator(".badge")).to_have_text("failed")
            error = failed.locator(".failure .error-text")
            expect(error).to_contain_text(f"failed on {bad_topic}[")
            expect(error).to_contain_text("key='poison': ValueError: a poisoned click")
            assert re.search(r"\[\d\]@\d+ key='poison'", error.inner_text())
            running = page.locator(f"#group-{ok}")
            expect(running.locator(".badge")).to_have_text("running")
            expect(running.locator("figure svg.chart polyline")).to_have_count(2, timeout=20_000)
            # one small chart per partition and series in the partition table
            expect(running.locator("td svg.chart.spark")).to_have_count(4)
            points = running.locator("figure svg.chart polyline").first.get_attribute("points")
            assert points and len(points.split()) >= 2
            expect(page.locator("#lookup")).to_be_visible()
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "groups.png"), full_page=True)

            # a namespace whose groups were stopped says so, with what to do
            cli("stop", ok)
            cli("stop", bad)
            empty = page.locator("#empty")
            expect(empty).to_contain_text(f'No processor group runs in namespace "{namespace}"')
            expect(empty).to_contain_text("goka-ray run MODULE:GRAPH")
            expect(page.locator("#lookup")).to_be_hidden()
            # a page that listed the group before it stopped still gets its last status
            code, detail = _get(f"http://127.0.0.1:{port}/api/groups/{bad}")
            assert code == 200 and detail["state"] == "stopped", (code, detail)  # type: ignore[index]
            page.screenshot(path=str(shots / "empty.png"), full_page=True)
            browser.close()
    finally:
        monitor.terminate()
        out, err = monitor.communicate(timeout=30)
        for group in (ok, bad):
            cli("stop", group, ok=False)
    print(f"monitor screenshots: {shots}")
    assert problems == [], problems
    assert "Traceback" not in err, err
