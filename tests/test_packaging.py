"""Packaging: every import declared, the locks agree with pyproject.toml, one version.

Offline checks of the files; ``scripts/check-minimums.sh`` (``make test``) installs the
lowest versions pyproject.toml allows and serves with them.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import app

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = ("requirements.lock", "requirements-test.lock", "requirements-bench.lock")
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


PACKAGE = canonicalize_name(PYPROJECT["project"]["name"])
#: Extras that only the project's own tooling installs; the others are features of the app.
TOOLING_EXTRAS = ("test", "bench")


def declared(extra: str | None = None) -> dict[str, Requirement]:
    """The requirements of the package or of one extra, the extra's own extras expanded."""
    project = PYPROJECT["project"]
    lines = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    found: dict[str, Requirement] = {}
    for requirement in map(Requirement, lines):
        if canonicalize_name(requirement.name) == PACKAGE:  # "space-cloud-gateway[otel]"
            for own in requirement.extras:
                found |= declared(own)
        else:
            found[canonicalize_name(requirement.name)] = requirement
    return found


def app_extras() -> list[str]:
    extras = PYPROJECT["project"].get("optional-dependencies", {})
    return [name for name in extras if name not in TOOLING_EXTRAS]


def locked(name: str) -> dict[str, str]:
    """``{package: version}`` of a lock, after checking that every pin carries a hash."""
    text = (ROOT / name).read_text()
    assert "://" not in text, f"{name} names an address: regenerate it with `make lock`"
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = PIN.match(block)
        if match is None:
            continue
        assert "--hash=sha256:" in block, f"{name}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    assert pins, f"{name} pins nothing"
    return pins


def imported_top_level_modules(folder: Path) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
    return modules - set(sys.stdlib_module_names) - {"app"}


def test_every_third_party_package_app_imports_is_declared() -> None:
    """In the dependencies, or in an extra of the app's (imported only where it is used)."""
    distributions = packages_distributions()
    dependencies = declared()
    for extra in app_extras():
        dependencies |= declared(extra)
    for module in sorted(imported_top_level_modules(ROOT / "app")):
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert names, f"app imports {module}, which no installed distribution provides"
        assert names & set(dependencies), f"app imports {module} ({names}): not declared"


def test_the_locks_pin_every_declared_dependency_within_its_range() -> None:
    for lock, extras in zip(LOCKS, ([], ["test"], ["test", "bench"]), strict=True):
        pins = locked(lock)
        wanted = declared() | {k: v for e in extras for k, v in declared(e).items()}
        for name, requirement in wanted.items():
            assert name in pins, f"{lock} lacks {name}: run `make lock`"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"{lock} pins {name}=={pins[name]}, outside {requirement}: run `make lock`"
            )


def test_the_locks_agree_on_every_package_they_share() -> None:
    runtime, test, bench = (locked(name) for name in LOCKS)
    assert {n: v for n, v in test.items() if n in runtime} == runtime
    assert {n: v for n, v in bench.items() if n in test} == test


def test_the_version_is_written_once() -> None:
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    setuptools = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert setuptools == {"attr": "app.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", app.__version__)
    assert app.__version__ not in (ROOT / "Dockerfile").read_text()


def test_deployed_image_tags_are_the_package_version() -> None:
    """Kubernetes YAML cannot read app/__init__.py: version tags are checked against it."""
    version = r"(\d+\.\d+\.\d+[\w.-]*)"
    tags = []
    for path in sorted((ROOT / "deploy").rglob("*.y*ml")):
        text = path.read_text()
        tags += [(path, tag) for tag in re.findall(rf"space-cloud-gateway:{version}", text)]
        tags += [(path, tag) for tag in re.findall(rf"newTag:\s*\"?{version}", text)]
    assert tags, "no versioned image tag found under deploy/"
    for path, tag in tags:
        assert tag == app.__version__, f"{path.relative_to(ROOT)}: tag {tag} != {app.__version__}"
