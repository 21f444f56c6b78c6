"""A small web monitor for the groups of one Ray namespace (``goka-ray monitor``).

One page shows every group, its partitions (state, actor, node, offsets, lag, keys, restarts)
and a form that reads a key from any group's table. The page is a thin client of a JSON API:

    GET /api/groups                    -> [{"group", "state", "partitions", "keys", "lag"}]
    GET /api/groups/<group>            -> the group's full status (as GroupStatus)
    GET /api/tables                    -> ["<group>-table", ...]
    GET /api/tables/<table>/<key>      -> {"table", "key", "found", "value"}

Errors come back as ``{"error": "..."}`` with 404 (unknown group or table), 400 or 503.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from goka_ray.errors import GokaRayError
from goka_ray.ray.cluster import UnknownGroupError, list_groups

__all__ = ["ClusterBackend", "serve"]

logger = logging.getLogger(__name__)


class ClusterBackend:
    """What the monitor shows, read from the running coordinators and views."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._views: dict[str, Any] = {}
        self._lock = threading.Lock()

    def groups(self) -> list[dict[str, Any]]:
        out = []
        for group in list_groups(self.namespace):
            try:
                status = self._processor(group).status()
            except GokaRayError:
                continue  # stopped between listing and asking
            out.append(
                {
                    "group": group,
                    "state": status.state,
                    "partitions": len(status.partitions),
                    "keys": status.keys,
                    "lag": status.lag,
                    "error": status.error,
                }
            )
        return out

    def group(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(self._processor(name).status())

    def tables(self) -> list[str]:
        return [f"{g}-table" for g in list_groups(self.namespace)]

    def read(self, table: str, key: str) -> dict[str, Any]:
        view = self._view(table)
        value = view.get(key)
        return {"table": table, "key": key, "found": value is not None, "value": value}

    def _processor(self, group: str) -> Any:
        from goka_ray.ray.processor import Processor

        return Processor.attach(group, namespace=self.namespace)

    def _view(self, table: str) -> Any:
        with self._lock:
            if table not in self._views:
                if not table.endswith("-table"):
                    raise UnknownGroupError(f"{table!r} is not a group table (<group>-table)")
                view = self._processor(table[: -len("-table")]).view()
                view.wait_ready(60)
                self._views[table] = view
            return self._views[table]


class _Handler(BaseHTTPRequestHandler):
    backend: ClusterBackend  # set on the subclass made by serve()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("monitor: " + format, *args)

    def do_GET(self) -> None:
        parts = [unquote(p) for p in self.path.split("?", 1)[0].split("/") if p]
        try:
            if not parts:
                self._send(HTTPStatus.OK, _PAGE.encode(), "text/html; charset=utf-8")
            elif parts == ["api", "groups"]:
                self._json(HTTPStatus.OK, self.backend.groups())
            elif len(parts) == 3 and parts[:2] == ["api", "groups"]:
                self._json(HTTPStatus.OK, self.backend.group(parts[2]))
            elif parts == ["api", "tables"]:
                self._json(HTTPStatus.OK, self.backend.tables())
            elif len(parts) == 4 and parts[:2] == ["api", "tables"]:
                self._json(HTTPStatus.OK, self.backend.read(parts[2], parts[3]))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {self.path}"})
        except UnknownGroupError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except GokaRayError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
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


def serve(
    namespace: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8470,
    backend: ClusterBackend | None = None,
) -> ThreadingHTTPServer:
    """A monitor server bound to ``host:port`` (0 picks a free port); call serve_forever().

    Ray must be connected already (``goka_ray.ray.cluster.connect``).
    """
    handler = type("MonitorHandler", (_Handler,), {"backend": backend or ClusterBackend(namespace)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>goka-ray monitor</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
 table { border-collapse: collapse; margin: .5em 0 1.5em; }
 th, td { border-bottom: 1px solid #ddd; padding: .25em .7em; text-align: right; }
 th:nth-child(2), td:nth-child(2), th:nth-child(3), td:nth-child(3) { text-align: left; }
 .running { color: #197a2e; } .failed, .lost { color: #b00020; font-weight: bold; }
 .recovering, .recovered, .starting, .scaling { color: #a06000; }
 #error { color: #b00020; } code { background: #f4f4f4; padding: 0 .3em; }
</style></head>
<body>
<h1>goka-ray monitor</h1>
<div id="error"></div>
<div id="groups">loading…</div>
<h2>Read a key</h2>
<form id="query">
 <select id="table"></select> <input id="key" placeholder="key" required>
 <button type="submit">get</button>
</form>
<pre id="result"></pre>
<script>
function cell(row, text, cls) {
  const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; row.appendChild(td);
}
async function getJSON(url) {
  const r = await fetch(url); const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText); return body;
}
async function refresh() {
  try {
    const groups = await getJSON("/api/groups");
    const root = document.getElementById("groups"); root.textContent = "";
    if (!groups.length) root.textContent = "no group is running in this namespace";
    for (const g of groups) {
      const status = await getJSON("/api/groups/" + encodeURIComponent(g.group));
      const h = document.createElement("h2");
      h.textContent = `${g.group}: ${g.state} (keys ${g.keys}, lag ${g.lag})`;
      root.appendChild(h);
      const t = document.createElement("table");
      const head = t.insertRow();
      for (const c of ["partition", "state", "actor", "node", "offsets", "lag", "keys",
                       "processed", "restarts", "epoch"]) {
        const th = document.createElement("th"); th.textContent = c; head.appendChild(th);
      }
      for (const p of status.partitions) {
        const row = t.insertRow();
        cell(row, p.partition); cell(row, p.state, p.state);
        cell(row, (p.actor_name || "-").split("/").pop());
        cell(row, (p.node_id || "-").slice(0, 8));
        cell(row, Object.entries(p.offsets).map(([k, v]) => `${k}:${v}`).join(" "));
        cell(row, Object.values(p.lag).reduce((a, b) => a + b, 0)); cell(row, p.keys);
        cell(row, p.processed); cell(row, p.restarts); cell(row, p.epoch);
      }
      root.appendChild(t);
    }
    const select = document.getElementById("table"); const chosen = select.value;
    select.textContent = "";
    for (const name of await getJSON("/api/tables")) {
      const o = document.createElement("option"); o.textContent = name; select.appendChild(o);
    }
    if (chosen) select.value = chosen;
    document.getElementById("error").textContent = "";
  } catch (e) { document.getElementById("error").textContent = e.message; }
}
document.getElementById("query").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const table = document.getElementById("table").value, key = document.getElementById("key").value;
  const out = document.getElementById("result");
  try {
    const r = await getJSON(`/api/tables/${encodeURIComponent(table)}/${encodeURIComponent(key)}`);
    out.textContent = r.found ? JSON.stringify(r.value, null, 2) : `${key} is not in ${table}`;
  } catch (e) { out.textContent = "error: " + e.message; }
});
refresh(); setInterval(refresh, 2000);
</script>
</body></html>
"""
