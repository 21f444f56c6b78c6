"""Fingerprints of a group's graph and code: stable across processes, changed by what the code
does, not by where it sits. Each version of a module is imported in a process of its own,
as a second `goka-ray run` would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from goka_ray import Input, Output, Persist, codecs, define_group
from goka_ray.core.fingerprint import GraphFingerprint, fingerprint, upgrade_problems

APP = """
from goka_ray import Input, Persist, codecs, define_group

STEP = 1

def helper(n):
    return n + STEP

def count(ctx, msg):
    ctx.set_value(helper(ctx.value() or 0))

def graph():
    return define_group("g", Input("clicks", codecs.String(), count), Persist(codecs.Int()))
"""

PRINT = (
    "import json, sys; sys.path.insert(0, '.'); import app; "
    "from goka_ray.core.fingerprint import fingerprint; "
    "f = fingerprint(app.graph()); print(json.dumps({'digest': f.digest, 'parts': f.parts}))"
)


def fingerprint_of(tmp_path: Path, source: str, seed: str = "1") -> GraphFingerprint:
    """The fingerprint of ``app.graph()`` as a fresh process computes it."""
    directory = tmp_path / f"v{abs(hash((source, seed)))}"
    directory.mkdir(exist_ok=True)
    (directory / "app.py").write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", PRINT],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return GraphFingerprint("g", data["digest"], data["parts"])


def test_the_same_code_has_the_same_fingerprint_in_every_process(tmp_path: Path) -> None:
    # sets in the code and other hash seeds must not change it
    source = APP.replace("n + STEP", "n + STEP if 'x' not in {'a', 'b', 'c'} else n")
    first = fingerprint_of(tmp_path, source, seed="1")
    second = fingerprint_of(tmp_path, source, seed="2")
    assert first.digest == second.digest
    assert first.changes(second) == []


def test_comments_docstrings_and_line_numbers_do_not_change_it(tmp_path: Path) -> None:
    base = fingerprint_of(tmp_path, APP)
    moved = APP.replace(
        "def count(ctx, msg):\n",
        '\n\n# counts clicks\ndef count(ctx, msg):\n    """Count a click."""\n',
    )
    assert fingerprint_of(tmp_path, moved).digest == base.digest


def test_an_edited_callback_changes_it_and_says_where(tmp_path: Path) -> None:
    base = fingerprint_of(tmp_path, APP)
    edited = fingerprint_of(tmp_path, APP.replace("helper(ctx.value() or 0)", "7"))
    assert edited.digest != base.digest
    assert base.changes(edited) == ["Input('clicks') callback changed"]


def test_a_helper_or_a_constant_the_callback_uses_changes_it(tmp_path: Path) -> None:
    base = fingerprint_of(tmp_path, APP)
    helper = fingerprint_of(tmp_path, APP.replace("return n + STEP", "return n + STEP * 2"))
    constant = fingerprint_of(tmp_path, APP.replace("STEP = 1", "STEP = 2"))
    assert base.changes(helper) == ["Input('clicks') callback changed"]
    assert base.changes(constant) == ["Input('clicks') callback changed"]


def test_an_unrelated_function_of_the_module_does_not_change_it(tmp_path: Path) -> None:
    base = fingerprint_of(tmp_path, APP)
    more = fingerprint_of(tmp_path, APP + "\ndef unused():\n    return 42\n")
    assert more.digest == base.digest


def test_closure_values_change_it() -> None:
    def counter(step: int):  # type: ignore[no-untyped-def]
        def count(ctx, msg):  # type: ignore[no-untyped-def]
            ctx.set_value((ctx.value() or 0) + step)

        return define_group("g", Input("clicks", codecs.String(), count), Persist(codecs.Int()))

    assert fingerprint(counter(1)).digest == fingerprint(counter(1)).digest
    assert fingerprint(counter(1)).changes(fingerprint(counter(2))) == [
        "Input('clicks') callback changed"
    ]


def test_codecs_options_and_edges_are_part_of_it() -> None:
    def count(ctx, msg):  # type: ignore[no-untyped-def]
        ctx.set_value((ctx.value() or 0) + 1)

    base = define_group("g", Input("clicks", codecs.String(), count), Persist(codecs.Int()))
    skip = define_group(
        "g", Input("clicks", codecs.String(), count, on_error="skip"), Persist(codecs.Int())
    )
    json_input = define_group("g", Input("clicks", codecs.Json(), count), Persist(codecs.Int()))
    more = define_group(
        "g",
        Input("clicks", codecs.String(), count),
        Persist(codecs.Int()),
        Output("alerts", codecs.String()),
    )
    f = fingerprint(base)
    assert f.changes(fingerprint(skip)) == ["Input('clicks') options changed"]
    assert f.changes(fingerprint(json_input)) == ["Input('clicks') codec changed"]
    assert f.changes(fingerprint(more)) == ["Output('alerts') added"]
    assert fingerprint(more).changes(f) == ["Output('alerts') removed"]
    assert upgrade_problems(f, fingerprint(more)) == []


def test_a_user_codec_is_identified_by_its_code_and_state(tmp_path: Path) -> None:
    codec = """
class Scaled:
    def __init__(self, factor=10):
        self.factor = factor
    def encode(self, value):
        return str(value * self.factor).encode()
    def decode(self, data):
        return int(data) // self.factor
"""
    source = codec + APP.replace("Persist(codecs.Int())", "Persist(Scaled())")
    base = fingerprint_of(tmp_path, source)
    state = fingerprint_of(tmp_path, source.replace("Persist(Scaled())", "Persist(Scaled(100))"))
    code = fingerprint_of(tmp_path, source.replace("int(data) //", "int(data) * 0 +"))
    assert base.changes(state) == ["Persist codec changed"]
    assert base.changes(code) == ["Persist codec changed"]
    problems = upgrade_problems(base, code)
    assert len(problems) == 1 and "table codec changed" in problems[0]


def test_an_upgrade_keeps_the_table_codec_and_the_table() -> None:
    def count(ctx, msg):  # type: ignore[no-untyped-def]
        ctx.set_value((ctx.value() or 0) + 1)

    def graph(*edges):  # type: ignore[no-untyped-def]
        return fingerprint(define_group("g", Input("clicks", codecs.String(), count), *edges))

    running = graph(Persist(codecs.Int()))
    assert upgrade_problems(running, graph(Persist(codecs.Int()))) == []
    (codec,) = upgrade_problems(running, graph(Persist(codecs.Json())))
    assert "g-table holds values encoded by the running codec" in codec
    (dropped,) = upgrade_problems(running, graph())
    assert "no Persist edge" in dropped
    (added,) = upgrade_problems(graph(), running)
    assert "adds a table" in added
