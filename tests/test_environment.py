"""pyproject.toml and environment.yml declare the same packages with the same version bounds."""

from __future__ import annotations

import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.conftest import REPO

# PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"netcdf4": "netcdf4", "eccodes": "python-eccodes", "matplotlib": "matplotlib-base",
               "duckdb": "python-duckdb"}
SELF = "picsel-nb"


def _pyproject() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    reqs = (Requirement(line) for line in lines)
    return {r.name.lower(): r for r in reqs if r.name != SELF}


def _environment() -> tuple[dict[str, SpecifierSet], dict[str, Requirement]]:
    deps = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    conda = {}
    pip: dict[str, Requirement] = {}
    for dep in deps:
        if isinstance(dep, dict):
            pip = {Requirement(p).name.lower(): Requirement(p) for p in dep["pip"] if p != "-e ."}
            continue
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
        if name != "python":  # conda's "python=3.11" is not a PEP 440 specifier
            conda[name] = SpecifierSet(spec)
    return conda, pip


def test_every_pyproject_package_is_in_environment_yml_with_the_same_lower_bound():
    conda, pip = _environment()
    drift = []
    for name, req in _pyproject().items():
        if name in pip:
            if str(pip[name].specifier) != str(req.specifier) or pip[name].extras != req.extras:
                drift.append(f"{name}: pyproject {req} vs environment.yml pip {pip[name]}")
            continue
        conda_name = CONDA_NAMES.get(name, name)
        if conda_name not in conda:
            drift.append(f"{name}: missing from environment.yml (as {conda_name})")
        elif conda[conda_name] != req.specifier:
            drift.append(f"{name}: {req.specifier} in pyproject, {conda[conda_name]} in yml")
    assert not drift, "\n".join(drift)


def test_environment_yml_declares_nothing_pyproject_does_not():
    conda, pip = _environment()
    known = {CONDA_NAMES.get(n, n) for n in _pyproject()} | set(_pyproject())
    extra = (set(conda) | set(pip)) - known - {"python", "pip", "h5py", "openjdk"}  # Spark's Java
    assert not extra, f"only in environment.yml: {sorted(extra)}"


def test_h5netcdf_brings_its_h5py_extra():
    assert "h5py" in _pyproject()["h5netcdf"].extras
    conda, _ = _environment()
    assert "h5py" in conda
