"""A small web monitor for the groups of one Ray namespace (``goka-ray monitor``).

One page shows the namespace and cluster, every group with its state (a failed group's error,
with the topic, partition, offset and key of the message that failed, in a red box at the top
of its section), charts of its throughput and lag over the last minutes (inline SVG, drawn by
the page; no external scripts), a table of its partitions (with the node of each owner and
of its standbys) with a small chart of each, placement warnings, the autoscaler's bounds and
its recent decisions with their reasons, and a form that reads a key from any group's table.
It says when it last heard from the cluster.

A sampler thread asks every group for its status every ``interval`` seconds and keeps the last
``history`` seconds (``goka_ray.control.history``). A key lookup reads through a View: view
actors the monitor had to start for it hold cluster resources, so they are removed once no
lookup used them for ``view_idle`` seconds, and when the monitor closes (view actors that ran
already are used, never removed). The page is a thin client of a JSON API:

    GET /api/info                      -> {"namespace", "cluster", "version", "interval",
                                           "history", "updated", "error"}
    GET /api/groups                    -> [{"group", "state", "partitions", "keys", "lag",
                                            "processed", "error", "code", "waiting"}]
    GET /api/groups/<group>            -> the group's full status (as GroupStatus)
    GET /api/groups/<group>/history    -> {"time": [...], "rate": {...}, "lag": {...}}
    GET /api/tables                    -> ["<group>-table", ...]
    GET /api/tables/<table>/<key>      -> {"table", "key", "key_hex", "found", "value"}

Errors come back as ``{"error": "..."}`` with 404 (unknown group or table), 400 or 503.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import unquote

from goka_ray.control.history import GroupHistory
from goka_ray.control.status import GroupState, GroupStatus
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.errors import GokaRayError
from goka_ray.ray.cluster import UnknownGroupError, list_groups, list_views

__all__ = ["ClusterBackend", "MonitorServer", "serve"]

logger = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("goka-ray")
    except PackageNotFoundError:
        return "?"


class ClusterBackend:
    """What the monitor shows, sampled from the running coordinators, and the views it reads.

    ``sample()`` (called by the sampler thread every ``interval`` seconds) asks every group
    for its status; the API answers from the last sample.
    """

    def __init__(
        self,
        namespace: str,
        *,
        cluster: str | None = None,
        interval: float = 2.0,
        history: float = 600.0,
        view_idle: float = 120.0,
    ) -> None:
        self.namespace = namespace
        self.cluster = cluster
        self.interval = interval
        self.view_idle = view_idle
        self.history = GroupHistory(history)
        self.updated: float | None = None
        self.error: str | None = None
        self._statuses: dict[str, GroupStatus] = {}
        #: groups that went away, with when: a page that listed one before it stopped still
        #: gets its last status (state ``stopped``) for a few samples, not a 404
        self._gone: dict[str, tuple[GroupStatus, float]] = {}
        self._views: dict[str, Any] = {}
        #: tables whose view actors this monitor started, when a lookup last used a view,
        #: and the lookups under way on it (a view in use is never removed)
        self._started: set[str] = set()
        self._used: dict[str, float] = {}
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Take one status of every group (any failure is kept as ``error`` for the page)."""
        try:
            statuses = {}
            for group in list_groups(self.namespace):
                try:
                    statuses[group] = self._processor(group).status()
                except UnknownGroupError:
                    continue  # stopped between listing and asking
            now = time.time()
        except Exception as exc:
            logger.warning("monitor: cannot read the groups: %s", exc)
            with self._lock:
                self.error = f"cannot read the groups from the cluster: {type(exc).__name__}: {exc}"
            return
        for status in statuses.values():
            self.history.add(status, now)
        with self._lock:
            for name in set(self._statuses) - set(statuses):
                stopped = replace(self._statuses[name], state=GroupState.STOPPED)
                self._gone[name] = (stopped, now)
            keep_gone = max(10.0, 5 * self.interval)
            self._gone = {
                n: g for n, g in self._gone.items() if n not in statuses and now - g[1] < keep_gone
            }
            self.history.keep_only(set(statuses) | set(self._gone))
            self._statuses = statuses
            self.updated = now
            self.error = None

    def info(self) -> dict[str, Any]:
        with self._lock:
            return {
                "namespace": self.namespace,
                "cluster": self.cluster,
                "version": _version(),
                "interval": self.interval,
                "history": self.history.seconds,
                "updated": self.updated,
                "error": self.error,
            }

    def groups(self) -> list[dict[str, Any]]:
        with self._lock:
            statuses = sorted(self._statuses.values(), key=lambda s: s.group)
        return [
            {
                "group": s.group,
                "state": s.state,
                "partitions": len(s.partitions),
                "keys": s.keys,
                "lag": s.lag,
                "processed": sum(p.processed for p in s.partitions),
                "error": s.error,
                "code": s.code,
                "waiting": s.waiting,
            }
            for s in statuses
        ]

    def group(self, name: str) -> dict[str, Any]:
        with self._lock:
            status = self._statuses.get(name)
            if status is None and name in self._gone:
                status = self._gone[name][0]
        if status is None:
            status = self._processor(name).status()  # raises UnknownGroupError
        return status.as_dict()

    def group_history(self, name: str) -> dict[str, Any]:
        with self._lock:
            known = name in self._statuses or name in self._gone
        if not known:
            self._processor(name)  # raises UnknownGroupError, naming the running groups
        return self.history.series(name, window=max(5.0, 3 * self.interval))

    def tables(self) -> list[str]:
        with self._lock:
            return [f"{g}-table" for g in sorted(self._statuses)]

    def read(self, table: str, key: str | bytes) -> dict[str, Any]:
        """The value of ``key`` (str or bytes) in ``table``; the key comes back as lossless
        text and as hex (the only form every JSON reader keeps for a key that is not UTF-8)."""
        view = self._view(table)
        try:
            kb = encode_key(key)
            value = view.get(kb)
        finally:
            with self._lock:
                self._busy[table] -= 1
                self._used[table] = time.monotonic()
        return {
            "table": table,
            "key": decode_key(kb),
            "key_hex": kb.hex(),
            "found": value is not None,
            "value": value,
        }

    def close(self) -> None:
        """Remove the view actors this monitor started (they hold cluster resources)."""
        self.expire_views(idle=-1.0)

    def expire_views(self, idle: float | None = None) -> None:
        """Let go of views no lookup used for ``idle`` seconds (``view_idle`` by default),
        removing the view actors this monitor started."""
        limit = self.view_idle if idle is None else idle
        now = time.monotonic()
        with self._lock:
            tables = [
                t
                for t in self._views
                if not self._busy.get(t) and now - self._used.get(t, now) > limit
            ]
            views = [(self._views.pop(t), t in self._started) for t in tables]
            self._started -= set(tables)
        for view, started in views:
            if not started:
                continue  # it ran before the monitor looked: someone else's
            try:
                view.stop()
            except Exception as exc:
                logger.warning("monitor: stopping the view of %s: %s", view.table, exc)

    def _processor(self, group: str) -> Any:
        from goka_ray.ray.processor import Processor

        return Processor.attach(group, namespace=self.namespace)

    def _view(self, table: str) -> Any:
        """The view of ``table``, started if need be, marked in use (``read`` ends that)."""
        with self._lock:
            if table not in self._views:
                if not table.endswith("-table"):
                    raise UnknownGroupError(f"{table!r} is not a group table (<group>-table)")
                existed = table in list_views(self.namespace)
                view = self._processor(table[: -len("-table")]).view()
                if not existed:
                    self._started.add(table)
                self._views[table] = view
                self._used[table] = time.monotonic()
                view.wait_ready(60)
            self._busy[table] = self._busy.get(table, 0) + 1
            return self._views[table]


class _Handler(BaseHTTPRequestHandler):
    backend: ClusterBackend  # set on the subclass made by serve()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("monitor: " + format, *args)

    def do_GET(self) -> None:
        # percent-escapes may spell any bytes (a key like %00%85mac): decode them losslessly
        path = self.path.split("?", 1)[0]
        parts = [unquote(p, errors="surrogateescape") for p in path.split("/") if p]
        try:
            if not parts:
                self._send(HTTPStatus.OK, _PAGE.encode(), "text/html; charset=utf-8")
            elif parts in (["favicon.ico"], ["favicon.svg"]):
                self._send(HTTPStatus.OK, _ICON.encode(), "image/svg+xml")
            elif parts == ["api", "info"]:
                self._json(HTTPStatus.OK, self.backend.info())
            elif parts == ["api", "groups"]:
                self._json(HTTPStatus.OK, self.backend.groups())
            elif len(parts) == 3 and parts[:2] == ["api", "groups"]:
                self._json(HTTPStatus.OK, self.backend.group(parts[2]))
            elif len(parts) == 4 and parts[:2] == ["api", "groups"] and parts[3] == "history":
                self._json(HTTPStatus.OK, self.backend.group_history(parts[2]))
            elif parts == ["api", "tables"]:
                self._json(HTTPStatus.OK, self.backend.tables())
            elif len(parts) == 4 and parts[:2] == ["api", "tables"]:
                self._json(HTTPStatus.OK, self.backend.read(parts[2], parts[3]))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {self.path}"})
        except UnknownGroupError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except GokaRayError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"{type(exc).__name__}: {exc}"})
        except Exception as exc:  # the page must say what went wrong, not hang up
            logger.exception("monitor request %s failed", self.path)
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{type(exc).__name__}: {exc}"})

    def _json(self, status: HTTPStatus, body: Any) -> None:
        data = json.dumps(body, default=repr).encode()
        self._send(status, data, "application/json")

    def _send(self, status: HTTPStatus, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


class MonitorServer(ThreadingHTTPServer):
    """The monitor's HTTP server and its sampler thread; ``close()`` stops both."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: ClusterBackend) -> None:
        handler = type("MonitorHandler", (_Handler,), {"backend": backend})
        super().__init__(address, handler)
        self.backend = backend
        self._stop = threading.Event()
        backend.sample()  # the first page already has data
        self._sampler = threading.Thread(target=self._sample, daemon=True, name="monitor-sample")
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.backend.interval):
            self.backend.sample()
            self.backend.expire_views()

    def close(self) -> None:
        self._stop.set()
        self.server_close()
        self.backend.close()


def serve(
    namespace: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8470,
    cluster: str | None = None,
    interval: float = 2.0,
    history: float = 600.0,
    view_idle: float = 120.0,
    backend: ClusterBackend | None = None,
) -> MonitorServer:
    """A monitor server bound to ``host:port`` (0 picks a free port); call serve_forever(),
    then close(). Samples every ``interval`` seconds and keeps ``history`` seconds of them;
    removes view actors it started for key lookups after ``view_idle`` idle seconds.

    Ray must be connected already (``goka_ray.ray.cluster.connect``).
    """
    backend = backend or ClusterBackend(
        namespace, cluster=cluster, interval=interval, history=history, view_idle=view_idle
    )
    return MonitorServer((host, port), backend)


_ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1f4e79"/>'
    '<polyline points="2,12 6,7 9,10 14,3" fill="none" stroke="#fff" stroke-width="2"/></svg>'
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>goka-ray monitor</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style>
 body { font-family: system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; }
 header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .4em 1.5em;
          border-bottom: 1px solid #ddd; padding: .8em 0 .6em; }
 header h1 { font-size: 1.3em; margin: 0; }
 .meta { color: #555; } .meta b { color: #222; font-weight: 600; }
 #updated.stale { color: #b00020; font-weight: 600; }
 .banner { background: #fdecea; border: 1px solid #f5c2c0; color: #8a1c14; padding: .6em .8em;
           border-radius: 4px; margin: .8em 0; }
 .empty { background: #f4f6f8; border: 1px dashed #bbb; padding: 1.2em; border-radius: 6px;
          margin: 1.5em 0; color: #444; }
 section.group { margin: 1.2em 0 2em; }
 section.group h2 { font-size: 1.15em; margin: .2em 0 .4em; }
 .badge { display: inline-block; padding: 0 .5em; border-radius: 3px; font-size: .85em;
          color: #fff; background: #888; vertical-align: middle; margin-left: .4em; }
 .badge.running { background: #197a2e; } .badge.failed { background: #b00020; }
 .badge.starting, .badge.scaling, .badge.upgrading { background: #a06000; }
 .badge.stopped { background: #666; }
 .waiting { border-left: 6px solid #a06000; background: #fff4e0; padding: .5em 1em;
            margin: .5em 0 .8em; }
 .failure { border-left: 6px solid #b00020; background: #fdecea; padding: .7em 1em;
            margin: .5em 0 .8em; }
 .failure h3 { margin: 0 0 .3em; color: #b00020; font-size: 1em; }
 .warning { background: #fff4e0; border-left: 6px solid #a06000; padding: .4em .8em;
            margin: .4em 0; }
 .autoscaling { margin: .4em 0 0; } ul.decisions { margin: .2em 0 .6em; color: #444; }
 .failure pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: .92em; }
 .summary { color: #444; margin: .2em 0 .6em; }
 .charts { display: flex; flex-wrap: wrap; gap: 1.2em; }
 figure { margin: 0; } figcaption { font-size: .85em; color: #444; }
 svg.chart { background: #fafbfc; border: 1px solid #e3e6ea; }
 table { border-collapse: collapse; margin: .7em 0 0; font-size: .92em; }
 th, td { border-bottom: 1px solid #e3e6ea; padding: .2em .6em; text-align: right;
          white-space: nowrap; }
 table.stopped td { color: #888; } table.stopped td.failed, table.stopped td.err { color: #b00020; }
 th { color: #555; font-weight: 600; }
 td.l, th.l { text-align: left; }
 td.offsets { white-space: normal; word-break: break-all; max-width: 16em; }
 td.running { color: #197a2e; } td.failed, td.lost { color: #b00020; font-weight: 600; }
 td.recovering, td.recovered, td.starting, td.pending { color: #a06000; }
 td.err { color: #b00020; text-align: left; white-space: normal; min-width: 8em;
          max-width: 22em; }
 .note { color: #666; font-size: .88em; margin: .5em 0 0; }
 code { background: #f1f1f1; padding: 0 .3em; }
 #lookup { border-top: 1px solid #ddd; margin-top: 2em; padding-top: .5em; }
</style></head>
<body>
<header>
 <h1>goka-ray monitor</h1>
 <span class="meta">namespace <b id="namespace">…</b></span>
 <span class="meta">Ray cluster <b id="cluster">…</b></span>
 <span class="meta" id="updated">not updated yet</span>
</header>
<div id="problem" class="banner" hidden></div>
<main id="groups"><p>loading…</p></main>
<section id="lookup" hidden>
 <h2>Read a key</h2>
 <form id="query">
  <select id="table" aria-label="table"></select>
  <input id="key" placeholder="key" aria-label="key" required>
  <button type="submit">get</button>
 </form>
 <pre id="result"></pre>
</section>
<script>
"use strict";
const SVG = "http://www.w3.org/2000/svg";
let info = null, lastUpdate = null;

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
function fmt(n) {
  if (n === null || n === undefined) return "-";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(0) + "k";
  return Number.isInteger(n) ? n.toLocaleString("en") : n.toFixed(1);
}
// A line chart of one series over time: values (null = no data), drawn into width x height.
function chart(times, values, o) {
  const w = o.width, h = o.height, pad = o.small ? 2 : 14;
  const s = svg("svg", {class: "chart" + (o.small ? " spark" : ""), width: w, height: h,
                        viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": o.label});
  const now = Date.now() / 1000, longest = info ? info.history : 600;
  // from the first sample (at least a minute back) to now
  const span = Math.min(longest, Math.max(60, times.length ? now - times[0] : 60));
  const pts = times.map((t, i) => [t, values[i]]).filter(p => p[1] !== null);
  const top = Math.max(0, ...pts.map(p => p[1])), max = Math.max(1, top);
  const x = t => pad + (w - 2 * pad) * (1 - (now - t) / span);
  const y = v => h - pad - (h - 2 * pad) * v / max;
  if (pts.length) {
    s.appendChild(svg("polyline", {points: pts.map(p => `${x(p[0]).toFixed(1)},` +
      `${y(p[1]).toFixed(1)}`).join(" "), fill: "none", stroke: o.color,
      "stroke-width": o.small ? 1.2 : 1.6}));
  }
  if (!o.small) {
    const label = (tx, ax, ay, anchor) => {
      const t = svg("text", {x: ax, y: ay, "font-size": 10, fill: "#666",
                             "text-anchor": anchor || "start"});
      t.textContent = tx; s.appendChild(t);
    };
    label(`max ${fmt(top)} ${o.unit}`, pad, 10);
    label(span < 120 ? `-${Math.round(span)} s` : `-${Math.round(span / 60)} min`, pad, h - 2);
    label("now", w - pad, h - 2, "end");
    if (!pts.length) label("no data yet", w / 2, h / 2, "middle");
  }
  return s;
}
async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
function cell(row, text, cls) { row.appendChild(el("td", cls ? {class: cls} : {}, text)); }

function renderGroup(g, status, hist) {
  const sec = el("section", {class: "group", id: "group-" + g.group});
  const h = el("h2", {}, g.group);
  h.appendChild(el("span", {class: "badge " + g.state}, g.state));
  sec.appendChild(h);
  if (g.state === "failed" || g.error) {
    const box = el("div", {class: "failure", role: "alert"});
    box.appendChild(el("h3", {}, `group ${g.group} has failed: its partitions stopped`));
    box.appendChild(el("pre", {class: "error-text"}, g.error || "no error recorded"));
    sec.appendChild(box);
  }
  if (g.waiting) {
    sec.appendChild(el("div", {class: "waiting", role: "status"}, "waiting: " + g.waiting));
  }
  const rate = hist.rate.total.length ? hist.rate.total[hist.rate.total.length - 1] : null;
  const count = (n, what) => `${fmt(n)} ${what}${n === 1 ? "" : "s"}`;
  sec.appendChild(el("p", {class: "summary"}, `${count(g.partitions, "partition")} on ` +
    `${count(status.actors, "actor")} · ${count(g.keys, "key")}` +
    ` · lag ${fmt(g.lag)} · processed ${fmt(g.processed)} · ${fmt(rate)} msg/s now` +
    (g.code ? ` · code ${g.code}` : "")));
  for (const w of status.warnings || []) sec.appendChild(el("p", {class: "warning"}, w));
  if (status.autoscaling) {
    sec.appendChild(el("p", {class: "autoscaling"}, "autoscaling: " + status.autoscaling));
    const list = el("ul", {class: "decisions"});
    for (const d of (status.scaling || []).slice(-5)) {
      const at = new Date(d.at * 1000).toLocaleTimeString([], {hour12: false});
      list.appendChild(el("li", {}, `${at} ${d.actors_from} -> ${d.actors_to} actors: ` +
        d.reason));
    }
    sec.appendChild(list);
  }
  const charts = el("div", {class: "charts"});
  for (const [name, series, color, unit] of [["throughput", hist.rate, "#1f77b4", "msg/s"],
                                              ["lag", hist.lag, "#d62728", "msgs"]]) {
    const f = el("figure");
    f.appendChild(chart(hist.time, series.total, {width: 360, height: 110, color, unit,
                                                  label: `${g.group} ${name}`}));
    f.appendChild(el("figcaption", {}, `${name} (${unit}), whole group`));
    charts.appendChild(f);
  }
  sec.appendChild(charts);
  const t = el("table");
  const head = t.insertRow();
  const cols = [["partition"], ["state", "l"], ["actor", "l"], ["node", "l"],
    ["standby on", "l"], ["offsets", "l"], ["lag"], ["keys"], ["processed"], ["restarts"],
    ["epoch"], ["msg/s", "l"], ["lag", "l"]];
  if (status.partitions.some(p => p.error)) cols.push(["error", "l"]);
  for (const [c, cls] of cols) head.appendChild(el("th", cls ? {class: cls} : {}, c));
  for (const p of status.partitions) {
    const row = t.insertRow();
    cell(row, p.partition); cell(row, p.state, "l " + p.state);
    cell(row, (p.actor_name || "-").split("/").pop(), "l");
    cell(row, (p.node_id || "-").slice(0, 8), "l");
    cell(row, (p.standby_nodes || []).map(n => n.slice(0, 8)).join(" ") || "-", "l");
    cell(row, Object.entries(p.offsets).map(([k, v]) => `${k}:${v}`).join(" ") || "-",
         "l offsets");
    cell(row, fmt(Object.values(p.lag).reduce((a, b) => a + b, 0)));
    cell(row, fmt(p.keys)); cell(row, fmt(p.processed)); cell(row, p.restarts);
    cell(row, p.epoch);
    for (const [series, color] of [[hist.rate, "#1f77b4"], [hist.lag, "#d62728"]]) {
      const td = el("td", {class: "l"});
      td.appendChild(chart(hist.time, series[String(p.partition)] || [],
        {width: 90, height: 18, color, small: true, label: `partition ${p.partition}`}));
      row.appendChild(td);
    }
    if (cols.length > 13) {
      const same = p.error && g.error && g.error.endsWith(p.error);
      cell(row, same ? "the group's error, above" : (p.error || ""), "err");
    }
  }
  if (g.state === "failed" || g.state === "stopped") {
    t.className = "stopped";
    sec.appendChild(el("p", {class: "note"}, "Partition states as last reported before " +
      `the group ${g.state === "failed" ? "failed" : "stopped"}; its actors are stopped.`));
  }
  sec.appendChild(t);
  return sec;
}

function renderEmpty(root) {
  const box = el("div", {class: "empty", id: "empty"});
  box.appendChild(el("p", {}, `No processor group runs in namespace "${info.namespace}"` +
    (info.cluster ? ` on the Ray cluster at ${info.cluster}.` : ".")));
  const p = el("p", {}, "Start one with ");
  p.appendChild(el("code", {}, `goka-ray run MODULE:GRAPH --namespace ${info.namespace}`));
  p.appendChild(document.createTextNode(" (or pick another namespace with " +
    "goka-ray monitor --namespace). This page updates by itself."));
  box.appendChild(p);
  root.appendChild(box);
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    info = await getJSON("/api/info");
    document.getElementById("namespace").textContent = info.namespace;
    document.getElementById("cluster").textContent = info.cluster || "(connected)";
    const groups = await getJSON("/api/groups");
    const details = await Promise.all(groups.map(g => Promise.all([
      getJSON("/api/groups/" + encodeURIComponent(g.group)),
      getJSON("/api/groups/" + encodeURIComponent(g.group) + "/history")])));
    const root = document.getElementById("groups");
    root.replaceChildren();
    if (!groups.length) renderEmpty(root);
    groups.forEach((g, i) => root.appendChild(renderGroup(g, details[i][0], details[i][1])));
    const tables = await getJSON("/api/tables");
    const select = document.getElementById("table"), chosen = select.value;
    select.replaceChildren(...tables.map(name => el("option", {}, name)));
    if (tables.includes(chosen)) select.value = chosen;
    document.getElementById("lookup").hidden = !tables.length;
    lastUpdate = info.updated;
    problem.hidden = !info.error;
    problem.textContent = info.error || "";
  } catch (e) {
    problem.hidden = false;
    problem.textContent = "cannot reach the monitor: " + e.message;
  }
  showUpdated();
}
function showUpdated() {
  const span = document.getElementById("updated");
  if (!lastUpdate) return;
  const age = Math.max(0, Date.now() / 1000 - lastUpdate);
  span.textContent = `last updated ${new Date(lastUpdate * 1000).toLocaleTimeString("en-GB")}` +
    ` (${Math.round(age)} s ago)`;
  span.classList.toggle("stale", age > 3 * ((info && info.interval) || 2) + 5);
}
document.getElementById("query").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const table = document.getElementById("table").value;
  const key = document.getElementById("key").value;
  const out = document.getElementById("result");
  try {
    const r = await getJSON(`/api/tables/${encodeURIComponent(table)}/${encodeURIComponent(key)}`);
    out.textContent = r.found ? JSON.stringify(r.value, null, 2) : `${key} is not in ${table}`;
  } catch (e) { out.textContent = "error: " + e.message; }
});
refresh();
setInterval(refresh, 2000);
setInterval(showUpdated, 1000);
</script>
</body></html>
"""
