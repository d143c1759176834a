"""Lower layers never import higher ones (docs/architecture.md, "Layers").

Every import in src/shvya, at module level or inside a function, is checked against one
order of domains. A domain may import any lower one and the shared infrastructure; the
composition root (app, cli, handlers, onboarding) may import anything; the infrastructure
imports no domain, except db.models, which gathers every model for Alembic.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "shvya"

# Low to high. A unit is a module prefix; the longest prefix that matches a module wins.
LAYERS: list[set[str]] = [
    {"events"},
    {"tenancy"},
    {"jobs"},
    {"crm"},
    {"conversations"},
    {"templates"},
    # The AI's language rules and its provider adapters: no database, no other domain's
    # services, so the knowledge base (embeddings) and the channels can use them. And the
    # table every provider call's usage goes to (ai.usage), embeddings calls included.
    {
        "ai.text",
        "ai.timeline",
        "ai.figures",
        "ai.understanding",
        "ai.lexicon",
        "ai.prompts",
        "ai.providers",
        "ai.usage",
    },
    {"knowledge"},
    {"channels"},
    {"ai"},
    {"sequences", "reports", "webhooks"},
    {"web"},
]
ROOT = {"app", "cli", "handlers", "onboarding", "__main__"}
# Imported by every layer; they import no domain.
INFRASTRUCTURE = {
    "",
    "config",
    "clock",
    "errors",
    "schemas",
    "crypto",
    "faults",
    "ratelimit",
    "redact",
    "deps",
    "db",
}
# db.models imports every model so Alembic sees one metadata; migrations are history.
EXEMPT = {"db.models"}


def _unit(module: str) -> str:
    """The unit of a module path relative to shvya ("ai.engage" -> "ai")."""
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        if prefix in ROOT or prefix in INFRASTRUCTURE:
            return prefix
        if any(prefix in layer for layer in LAYERS):
            return prefix
    return parts[0]


def _rank(unit: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    return None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "shvya":
                found.extend((node.lineno, alias.name) for alias in node.names)
            elif node.module.startswith("shvya."):
                base = node.module.removeprefix("shvya.")
                found.append((node.lineno, base))
                # `from shvya.ai import service` names the module shvya.ai.service
                found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(
                (node.lineno, alias.name.removeprefix("shvya."))
                for alias in node.names
                if alias.name.startswith("shvya.")
            )
    return found


def _violations() -> list[str]:
    problems: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        if module in EXEMPT or module.startswith("db.migrations"):
            continue
        source = _unit(module)
        if source in ROOT:
            continue
        for line, target_module in _imports(path):
            target = _unit(target_module)
            if target == source or target in INFRASTRUCTURE:
                continue
            where = f"shvya/{relative}.py:{line} imports shvya.{target_module}"
            if source in INFRASTRUCTURE:
                problems.append(f"{where}: infrastructure imports no domain")
                continue
            if target in ROOT:
                problems.append(f"{where}: only the composition root imports the root")
                continue
            low, high = _rank(target), _rank(source)
            if low is None or high is None:
                problems.append(f"{where}: {target!r} or {source!r} is in no layer")
            elif low > high:
                problems.append(f"{where}: {target} is above {source}")
    return problems


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert _violations() == []


def test_every_domain_folder_is_in_a_layer() -> None:
    folders = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    placed = {unit.split(".")[0] for layer in LAYERS for unit in layer} | INFRASTRUCTURE
    assert folders - placed == set()


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import of a higher layer, even inside a function, is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from shvya.ai import engage\n", encoding="utf-8")
    assert _imports(sample) == [(2, "ai"), (2, "ai.engage")]
    assert _rank(_unit("ai.engage")) > _rank(_unit("jobs.service"))  # type: ignore[operator]
