"""What ``src/medlake`` imports is installed by ``make demo``, not only by ``make test``.

``make demo`` installs the core dependencies and the ``omics`` extra; ``make test`` adds
``dev`` and the rest. A package imported by the platform but declared only under
``dev`` works in the test suite and breaks the demo on a fresh machine (``hl7`` did).
Every third-party module imported anywhere under ``src/medlake`` must come from a
distribution the core dependencies or a non-``dev`` extra declare, directly or as one
of their own requirements.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "medlake"
TEST_ONLY_EXTRAS = {"dev"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return {
        module: path
        for module, path in found.items()
        if module != "medlake" and module not in sys.stdlib_module_names
    }


def _installed_for_the_demo() -> set[str]:
    """Distributions the core dependencies and non-dev extras bring, transitively.

    medlake's own requirements are read from pyproject.toml (the installed metadata may
    predate an edit); theirs from the installed packages.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra, requirements in project.get("optional-dependencies", {}).items():
        if extra not in TEST_ONLY_EXTRAS:
            lines.extend(requirements)
    wanted = [Requirement(line) for line in lines]
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = _normal(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            nested = Requirement(line)
            extra = _extra_of(nested)
            if extra is None or extra in requirement.extras:
                wanted.append(nested)
    return seen


def _extra_of(requirement: Requirement) -> str | None:
    if requirement.marker is None:
        return None
    match = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", str(requirement.marker))
    return match.group(1) if match else None


def test_every_module_the_platform_imports_is_installed_without_the_dev_extra() -> None:
    providers = metadata.packages_distributions()
    installed = _installed_for_the_demo()
    missing = {
        module: str(path.relative_to(SRC.parent))
        for module, path in _imported_top_level_modules().items()
        if not any(_normal(dist) in installed for dist in providers.get(module, []))
    }
    assert not missing, f"imported by src/medlake but only installed by `make test`: {missing}"


def test_the_check_sees_a_dev_only_package() -> None:
    # hypothesis is a dev-only dependency: were it imported by the platform, it must fail
    providers = metadata.packages_distributions()
    assert not any(_normal(d) in _installed_for_the_demo() for d in providers["hypothesis"])
