"""No import runs up the layers (docs/ARCHITECTURE.md). An AST scan of every module under src/openarts.

Layers, bottom to top; a package may import its own modules and those of the layers it lists:

    core         the domain: pure, no I/O               (nothing but core)
    config       settings and the config file          core
    store        SQL; transition() writes phases        core
    scheduler    plan(): pure placement                 core
    storage      obs:// on a directory                  core
    security     signer, credentials, tokens, audit     core, config
    executors    run and watch processes                core, config, storage
    supervisor   the reconcile loop                     core, config, store, scheduler, storage, executors
    service      the operations behind the routes       core, config, store, scheduler, storage, security,
                                                        executors
    console      the web console's pages                core, config, store, scheduler, storage, executors,
                                                        security, service
    api          HTTP: routes, auth, error table        everything but cli
    cli          the openarts command                   everything

`service` and `supervisor` are peers: neither imports the other (the API wires them together; they
meet only in the store). The package root (`openarts`, its `__version__`) may be imported anywhere.
Imports under `if TYPE_CHECKING:` count too: a type that lives above a module is a design smell even
when it costs nothing at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "openarts"

BELOW_SERVICES = {"core", "config", "store", "scheduler", "storage", "executors"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "config": {"core"},
    "store": {"core"},
    "scheduler": {"core"},
    "storage": {"core"},
    "security": {"core", "config"},
    "executors": {"core", "config", "storage"},
    "supervisor": BELOW_SERVICES,
    "service": BELOW_SERVICES | {"security"},
    "console": BELOW_SERVICES | {"security", "service"},
    "api": BELOW_SERVICES | {"security", "supervisor", "service", "console"},
    "cli": BELOW_SERVICES | {"security", "supervisor", "service", "console", "api"},
}
ROOT = ""  # the package root: openarts/__init__.py (__version__)


def layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else ("" if rel.name == "__init__.py" else rel.stem)


def module_of(path: Path) -> list[str]:
    rel = path.relative_to(SRC).with_suffix("")
    parts = ["openarts", *rel.parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_layers(path: Path, source: str | None = None) -> list[tuple[int, str, str]]:
    """(line, imported module, its layer) for every import of openarts in the module at `path`."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = module_of(path)
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[:len(package) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from openarts import x` / `from openarts.api import render`: x may be a module
            names = [f"{target}.{a.name}" for a in node.names] if target in ("openarts",) else [target]
        for name in names:
            parts = name.split(".")
            if parts[0] != "openarts":
                continue
            sub = parts[1] if len(parts) > 1 else ROOT
            if sub and not (SRC / sub).is_dir() and not (SRC / f"{sub}.py").is_file():
                sub = ROOT  # `from openarts import __version__`
            found.append((node.lineno, name, sub))
    return sorted(found)


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    """A new package must be placed in the table (and in docs/ARCHITECTURE.md) on purpose."""
    layers = {layer_of(p) for p in modules()} - {ROOT}
    assert layers <= set(ALLOWED), f"packages without a layer: {sorted(layers - set(ALLOWED))}"


def test_no_import_runs_up_the_layers() -> None:
    problems = []
    for path in modules():
        layer = layer_of(path)
        allowed = ALLOWED.get(layer, set()) | {layer, ROOT}
        for line, name, target in imported_layers(path):
            if target not in allowed:
                problems.append(f"{path.relative_to(SRC.parent)}:{line} imports {name} ({target or 'openarts'}): "
                                f"{layer or 'openarts'} may import only {sorted(allowed - {ROOT})}")
    assert not problems, "imports up the layers:\n" + "\n".join(problems)


def test_the_scan_sees_every_kind_of_import() -> None:
    """The scanner itself: plain, from, from-the-root, relative and nested imports are all found."""
    assert any(target == "store" for _, _, target in imported_layers(SRC / "service" / "jobs.py"))
    probe = ("import openarts.api.app\nfrom openarts import cli\nfrom openarts import __version__\n"
             "from ..supervisor import loop\nfrom . import logs\n"
             "def f():\n    from openarts.api.routes import ROUTES\n")
    got = [(name, target) for _, name, target in imported_layers(SRC / "service" / "probe.py", probe)]
    assert got == [("openarts.api.app", "api"), ("openarts.cli", "cli"), ("openarts.__version__", ""),
                   ("openarts.supervisor", "supervisor"), ("openarts.service", "service"),
                   ("openarts.api.routes", "api")]
