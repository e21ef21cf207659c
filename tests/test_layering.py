"""The layering rules between lmrec's folders, checked statically on the source files (no install).

- The SDK core (sdk/ but the application layer: sdk/cli/ and sdk/client.py) imports neither
  lmrec.cli, lmrec.trainer nor lmrec.server.
- No relative import crosses a top-level folder (sdk/ is lmrec, trainer/ lmrec.trainer, server/
  lmrec.server): an import that leaves its folder is absolute, so a reader sees where it goes.
- Outside its own folder, code (tests and benchmarks included) uses public modules only: no
  `lmrec._x`, `lmrec.trainer._x`, `lmrec.server._x`.
- Nothing outside a module reads its underscore attributes: `obj._name` is only written where
  `_name` is defined (or on self/cls), and no underscore name is imported from another module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"sdk": "lmrec", "trainer": "lmrec.trainer", "server": "lmrec.server"}
APPLICATION = ("sdk/cli/", "sdk/client.py", "sdk/__main__.py")  # on top of all three folders
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}  # public despite the underscore
CHECKED = ("sdk", "trainer", "server", "tests", "bench")
GENERATED = "server/v1/"


def module_name(rel: str) -> str | None:
    """`sdk/_index.py` → `lmrec._index`; None for files outside the package (tests, bench)."""
    folder, _, rest = rel.partition("/")
    if folder not in FOLDERS:
        return None
    parts = [p for p in rest.removesuffix(".py").split("/") if p]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([FOLDERS[folder], *parts])


def folder_of(module: str) -> str:
    """The top-level folder a module of the lmrec package lives in."""
    for folder, package in sorted(FOLDERS.items(), key=lambda kv: -len(kv[1])):
        if module == package or module.startswith(package + "."):
            return folder
    return "outside"


def resolve(rel: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative ones resolved against `rel`'s package)."""
    if not node.level:
        return node.module or ""
    own = module_name(rel) or ""
    package = own.split(".") if rel.endswith("__init__.py") else own.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join(base + ([node.module] if node.module else []))


def imports(rel: str, tree: ast.AST) -> Iterator[tuple[int, str, bool, list[str]]]:
    """(line, absolute module, relative?, names imported from it) for every import in the file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, False, []
        elif isinstance(node, ast.ImportFrom):
            target = resolve(rel, node)
            names = [a.name for a in node.names]
            yield node.lineno, target, bool(node.level), names
            for name in names:  # `from lmrec.server import _gen` imports a module too
                if is_module(f"{target}.{name}"):
                    yield node.lineno, f"{target}.{name}", bool(node.level), []


def is_module(module: str) -> bool:
    """Whether `module` (of the lmrec package) is a file or package in this tree."""
    folder = folder_of(module)
    if folder == "outside":
        return False
    rest = module[len(FOLDERS[folder]):].strip(".").replace(".", "/")
    path = ROOT / folder / rest
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split(".")[1:])


def defined_names(tree: ast.AST) -> set[str]:
    """Every name the file defines: functions, classes, assignments (to names and attributes)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return out


def foreign_roots(tree: ast.AST) -> set[str]:
    """Names bound to modules of other libraries: their private attributes are theirs to police."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names if not a.name.startswith("lmrec")}
        elif isinstance(node, ast.ImportFrom) and not node.level and not (node.module or "").startswith("lmrec"):
            out |= {a.asname or a.name for a in node.names}
    return out


def root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def violations(rel: str, source: str) -> list[str]:
    """Every breach of the rules above in one file, as `path:line: what`."""
    tree = ast.parse(source)
    folder = rel.split("/")[0]
    core = folder == "sdk" and not rel.startswith(APPLICATION)
    out = []
    for line, target, relative, names in imports(rel, tree):
        where = f"{rel}:{line}"
        if relative and not target.startswith("lmrec"):
            out.append(f"{where}: relative import leaves {folder}/ and the lmrec package")
            continue
        if not target.startswith("lmrec"):
            continue
        to = folder_of(target)
        if core and (target.startswith(("lmrec.cli", "lmrec.trainer", "lmrec.server"))):
            out.append(f"{where}: the SDK core imports {target}")
        if relative and to != folder:
            out.append(f"{where}: relative import leaves {folder}/ for {target} (write it absolute)")
        if to != folder and private(target):
            out.append(f"{where}: imports the private module {target} from outside {to}/")
        for name in names:
            if name.startswith("_") and not name.startswith("__") and not is_module(f"{target}.{name}"):
                out.append(f"{where}: imports the private name {name} from {target}")
    mine, foreign = defined_names(tree), foreign_roots(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = root(node.value)
            if base in ("self", "cls") or base in foreign or node.attr in mine or node.attr in NAMEDTUPLE_API:
                continue
            out.append(f"{rel}:{node.lineno}: reads {node.attr}, an underscore attribute of another module")
    return out


def sources() -> list[Path]:
    return sorted(p for folder in CHECKED for p in (ROOT / folder).rglob("*.py")
                  if GENERATED not in p.relative_to(ROOT).as_posix() and "node_modules" not in p.parts)


def test_the_tree_keeps_the_layering_rules() -> None:
    found = [v for p in sources() for v in violations(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8"))]
    assert not found, "\n".join(found)


PLANTED = [
    ("sdk/_index.py", "import lmrec.server\n", "the SDK core imports lmrec.server"),
    ("sdk/_catalogue.py", "from lmrec.trainer import train\n", "the SDK core imports lmrec.trainer"),
    ("sdk/_bundle.py", "def f():\n    from .cli import main\n", "the SDK core imports lmrec.cli"),
    ("trainer/export.py", "from .. import Recommender\n", "relative import leaves trainer/"),
    ("sdk/cli/_train.py", "from ..trainer import train\n", "relative import leaves sdk/"),
    ("server/_servicer.py", "from lmrec._recommender import Recommender\n", "private module lmrec._recommender"),
    ("tests/test_x.py", "from lmrec.server._dataplane import DataPlane\n", "private module lmrec.server._dataplane"),
    ("server/_server.py", "def f(rec):\n    return rec._users\n", "reads _users"),
    ("bench/x.py", "from lmrec._models import open_models\n", "private module lmrec._models"),
    ("sdk/_recommender.py", "from ._catalogue import _apply\n", "private name _apply"),
]


@pytest.mark.parametrize(("rel", "planted", "message"), PLANTED, ids=[p[0] for p in PLANTED])
def test_a_planted_violation_is_caught(rel: str, planted: str, message: str) -> None:
    path = ROOT / rel
    source = path.read_text(encoding="utf-8") if path.exists() else ""
    assert not violations(rel, source)
    found = violations(rel, source + "\n" + planted)
    assert any(message in v for v in found), found


def test_the_application_layer_may_import_everything() -> None:
    assert not violations("sdk/cli/_serve.py", "from lmrec.server import serve\nfrom lmrec.trainer import train\n")
