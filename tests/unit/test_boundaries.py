"""What importing ctrain brings into a process: no Airflow, and a preload that is safe to fork."""

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import ctrain
from ctrain.runtime import TASK_PRELOAD

_IMPORT_AND_REPORT = (
    "import importlib, json, sys, threading\n"
    "for name in sys.argv[1:]:\n"
    "    importlib.import_module(name)\n"
    "print(json.dumps({\n"
    "    'threads': sorted(t.name for t in threading.enumerate()),\n"
    "    'airflow': sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')),\n"
    "}))\n"
)


def fresh_import(modules: list[str], airflow_home) -> dict:
    """Import ``modules`` in a new interpreter; its threads and Airflow modules afterwards."""
    env = os.environ | {"AIRFLOW_HOME": str(airflow_home), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_AND_REPORT, *modules],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_module_of_the_library_imports_airflow_but_orchestration(tmp_path):
    modules = [
        m.name
        for m in pkgutil.walk_packages(ctrain.__path__, "ctrain.")
        if m.name != "ctrain.orchestration"
    ]
    assert "ctrain.steps" in modules and "ctrain.runtime" in modules
    assert fresh_import(modules, tmp_path)["airflow"] == []


def test_every_preloaded_module_imports_and_none_starts_a_thread(tmp_path):
    # multiprocessing's forkserver skips a preload module that fails to import without a word,
    # and forking a process with a thread running is unsafe: both would go unnoticed otherwise.
    assert fresh_import(list(TASK_PRELOAD), tmp_path)["threads"] == ["MainThread"]


# The layering of the library. Shared pieces sit below the loop's stages (the statistics among
# them); the stages follow the loop (ingest -> training -> promotion -> monitoring -> serving ->
# rollout) and may use what comes before them, never what comes after; the entry points (steps,
# CLI, demo, runtime) sit on top.
SHARED = {
    "ctrain",
    "ctrain.settings",
    "ctrain.storage",
    "ctrain.records",
    "ctrain.metrics",
    "ctrain.stats",
    "ctrain.model_io",
    "ctrain.expectations",
    "ctrain.credentials",
    "ctrain.tracking",
    "ctrain.registry",
    "ctrain.dag_ids",
    "ctrain.data",
}
LOOP = [
    "ctrain.ingest",
    "ctrain.training",
    "ctrain.promotion",
    "ctrain.monitoring",
    "ctrain.serving",
    "ctrain.rollout",
]
ENTRY = {
    "ctrain.steps",
    "ctrain.status",
    "ctrain.telemetry",
    "ctrain.notify",
    "ctrain.deadlines",
    "ctrain.runtime",
    "ctrain.harness",
    "ctrain.demo",
    "ctrain.demo_envs",
    "ctrain.cli",
    "ctrain.orchestration",
    "ctrain.provision",
    "ctrain.scaffold",
}


def _library_imports() -> dict[str, set[str]]:
    """Each module of ctrain and the ctrain modules it imports, anywhere in its body."""
    import ast

    root = Path(ctrain.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            else:
                continue
            for target in targets:
                # The longest prefix that is a module of ctrain: `from ctrain import steps`
                # imports ctrain.steps; `from ctrain.x import f` imports ctrain.x.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def _layer(module: str) -> str:
    """The layer a module belongs to: its own name, or the package of the loop it sits in."""
    for group in (*LOOP, *ENTRY, *SHARED - {"ctrain"}):
        if module == group or module.startswith(group + "."):
            return group
    return module


def test_every_module_of_the_library_has_a_place_in_the_layering():
    unplaced = [m for m in _library_imports() if _layer(m) not in SHARED | ENTRY | set(LOOP)]
    assert unplaced == []


def test_the_import_graph_of_the_library_has_no_cycle():
    graph = _library_imports()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(" -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert done == set(graph)


def test_shared_pieces_import_only_shared_pieces():
    wrong = {
        (m, dep)
        for m, deps in _library_imports().items()
        if _layer(m) in SHARED
        for dep in deps
        if _layer(dep) not in SHARED
    }
    assert wrong == set()


def test_no_stage_of_the_loop_imports_a_later_stage_or_an_entry_point():
    wrong = set()
    for m, deps in _library_imports().items():
        if _layer(m) not in LOOP:
            continue
        mine = LOOP.index(_layer(m))
        for dep in deps:
            layer = _layer(dep)
            if layer in ENTRY or (layer in LOOP and LOOP.index(layer) > mine):
                wrong.add((m, dep))
    assert wrong == set()


def test_the_service_uses_only_shared_pieces():
    """``ctrain serve`` answers requests; what moves aliases or judges a rollout (promotion, the
    rollout's control) stays out of its process, and it borrows no stage's math."""
    wrong = {
        (m, dep)
        for m, deps in _library_imports().items()
        if _layer(m) == "ctrain.serving"
        for dep in deps
        if _layer(dep) not in SHARED | {"ctrain.serving"}
    }
    assert wrong == set()


def test_stages_share_their_statistics_through_one_module():
    graph = _library_imports()
    users = {m for m, deps in graph.items() if "ctrain.stats" in deps}
    assert {
        "ctrain.promotion.compare",
        "ctrain.monitoring.check",
        "ctrain.monitoring.drift",
        "ctrain.rollout.evidence",
    } <= users
    borrowed = {
        (m, dep)
        for m, deps in graph.items()
        if _layer(m) in LOOP
        for dep in deps
        if dep in {"ctrain.promotion.compare", "ctrain.monitoring.drift"}
        and _layer(dep) != _layer(m)
    }
    assert borrowed == set()


def test_the_layering_test_sees_the_imports_it_judges():
    # A check that cannot fail is no check: these edges exist, so the graph must show them.
    graph = _library_imports()
    assert "ctrain.ingest.labels" in graph["ctrain.training.assemble"]
    assert "ctrain.registry" in graph["ctrain.monitoring.check"]
    assert "ctrain.steps" in graph["ctrain.cli"]  # imported inside a function body
    assert _layer("ctrain.monitoring.check") == "ctrain.monitoring"
