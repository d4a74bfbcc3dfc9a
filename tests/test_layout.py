"""The package's layers: each imports only from the layers below it (README, "How the code is laid out")."""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffusion_lab"
# Bottom to top; a module may import from its own layer and those before it.
LAYERS = [
    {"stopping", "staging", "path_names", "run_files"},  # infrastructure used everywhere
    {"schedulers", "degradations", "models", "pipelines"},  # what saved pipelines are made of (travels as remote code)
    {"data", "hub"},
    {"sampling", "evaluation"},
    {"training"},
    {"experiments"},
    {"commands", "__main__", "__init__"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}
# Files that travel with saved pipelines as remote code import only torch, numpy, diffusers and their siblings.
REMOTE_CODE = [*(path for path in PACKAGE.glob("schedulers/*.py") if path.stem not in ("__init__", "factory")),
               *(path for path in PACKAGE.glob("pipelines/*.py") if path.stem not in ("__init__", "export", "validation")),
               *(path for path in PACKAGE.glob("degradations/*.py") if path.stem not in ("__init__", "registry")),
               PACKAGE / "models" / "coursework_cnn.py"]


def top_level_of(module: Path) -> str:
    return module.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_top_levels(module: Path) -> set[str]:
    """The top-level parts of diffusion_lab that `module` imports (relative or absolute imports)."""
    found = set()
    package_parts = module.relative_to(PACKAGE).parent.parts
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[: len(package_parts) - (node.level - 1)])
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # `from . import x` at the top of the package
                    parts = [alias.name for alias in node.names]
                found.add(parts[0])
            elif node.module and node.module.startswith("diffusion_lab."):
                found.add(node.module.split(".")[1])
    return found


def test_every_top_level_part_has_a_layer():
    parts = {top_level_of(path) for path in PACKAGE.rglob("*.py")}
    assert parts == set(LAYER_OF), parts ^ set(LAYER_OF)


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for module in sorted(PACKAGE.rglob("*.py")):
        own = LAYER_OF[top_level_of(module)]
        upward += [f"{module.relative_to(PACKAGE)} imports {name}" for name in imported_top_levels(module)
                   if name in LAYER_OF and LAYER_OF[name] > own]
    assert not upward, upward


def test_remote_code_files_import_only_their_siblings_and_libraries():
    """What travels as remote code must load where only diffusers (and its dependencies) is installed."""
    allowed = {*sys.stdlib_module_names, "torch", "numpy", "diffusers", "huggingface_hub", "PIL"}
    for module in REMOTE_CODE:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and (module.parent / f"{node.module}.py").is_file(), f"{module.name}: from {'.' * node.level}{node.module}"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
                assert all(name.split(".")[0] in allowed for name in names), f"{module.name}: import {names}"
