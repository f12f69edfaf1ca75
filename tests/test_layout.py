"""The layout is the architecture: each folder of api/ is one concern and depends only on folders
below it (and on graph/, tools/, ingestion/, settings). ingestion/ imports neither api/ nor graph/;
graph/ knows nothing of api/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first; a folder may import from the folders before it.
API_LAYERS = [
    ("observability",), ("contract",), ("storage",), ("security",), ("files",), ("tooling",), ("runs",),
    ("responses",), ("http",)
]
LEVEL = {name: i for i, names in enumerate(API_LAYERS) for name in names}


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def _concern(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "api" and parts[1] in LEVEL else None


def test_api_folders_depend_downward_only():
    upward = []
    for path in sorted((ROOT / "api").rglob("*.py")):
        own = _concern(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if own is None:
            continue  # settings.py, cli.py and the package itself sit above every concern
        for module in _imports(path):
            other = _concern(module)
            if other is not None and other != own and LEVEL[other] >= LEVEL[own]:
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert upward == []


def test_api_top_level_is_small_and_every_folder_is_a_known_concern():
    entries = sorted(p.name for p in (ROOT / "api").iterdir() if p.name != "__pycache__")
    folders = {name for name in entries if (ROOT / "api" / name).is_dir()}
    assert folders == set(LEVEL)
    assert set(entries) - folders == {"__init__.py", "cli.py", "settings.py"}


def test_graph_and_ingestion_stay_independent_of_the_api():
    offenders = []
    for folder, forbidden in (("graph", ("api",)), ("ingestion", ("api", "graph")), ("tools", ("api",))):
        for path in (ROOT / folder).rglob("*.py"):
            offenders += [f"{path.relative_to(ROOT)} imports {m}" for m in _imports(path) if m.split(".")[0] in forbidden]
    assert offenders == []


RUN_STATUSES = {
    "queued", "in_progress", "requires_action", "cancelling", "cancelled", "failed", "completed", "incomplete", "expired"
}
# Words that make a list of statuses a run's: steps, messages and vector store files share the
# others ("in_progress", "completed", ...), and a Response's statuses also include "queued".
RUN_ONLY_STATUSES = {"requires_action", "cancelling", "expired"}
STATUS_VOCABULARY = ROOT / "api" / "contract" / "run_status.py"
# Migrations are the schema's history: their index predicates stay as they were written (the
# statements that use those indexes build the same list from the vocabulary).
MIGRATIONS = ROOT / "api" / "storage" / "migrations.py"


def _is_run_statuses(words: set[str], path: Path) -> bool:
    if len(words) < 2 or not words <= RUN_STATUSES:
        return False
    return bool(words & RUN_ONLY_STATUSES) or ("queued" in words and "responses" not in path.parts)


def _status_sets(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(words) == len(node.elts) and _is_run_statuses(set(words), path):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {tuple(words)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for listed in re.findall(r"IN \(('[a-z_]+'(?:,\s*'[a-z_]+')*)\)", node.value):
                if _is_run_statuses(set(re.findall(r"'([a-z_]+)'", listed)), path):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} IN ({listed})")
    return found


def test_run_statuses_are_listed_in_one_place():
    """Sets of run statuses (active, terminal, allowed moves, SQL lists) are spelled only in the
    vocabulary module; everything else takes them from there."""
    spelled = []
    for folder in ("api", "graph", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path not in (STATUS_VOCABULARY, MIGRATIONS):
                spelled += _status_sets(path)
    assert spelled == []
    assert _status_sets(MIGRATIONS) != []  # the check sees a list where there is one


def _environment_reads(path: Path) -> list[str]:
    """Where a module reads the process environment. Writing it is not reading: the CLI hands the
    database URL to the server processes it starts, and ingestion sets defaults (`setdefault`) that
    third-party libraries read themselves (no telemetry, no downloads)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"imports os.{a.name}" for a in node.names if a.name in ("environ", "environb", "getenv", "getenvb")]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"):
            continue
        if node.attr in ("getenv", "getenvb"):
            found.append(f"line {node.lineno}: os.{node.attr}")
        elif node.attr in ("environ", "environb"):
            parent = parents.get(node)
            written = isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store)
            defaulted = isinstance(parent, ast.Attribute) and parent.attr == "setdefault"
            if not (written or defaulted):
                found.append(f"line {node.lineno}: os.{node.attr}")
    return found


def test_only_settings_reads_the_environment():
    readers = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in ("tests", "bench") or relative.parts[0].startswith(".") or relative == Path("api/settings.py"):
            continue
        readers += [f"{relative} {where}" for where in _environment_reads(path)]
    assert readers == []
