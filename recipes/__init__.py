"""The recipes, shipped inside the package as ``sedweak.recipes`` (setup.py maps this folder
to it, so the files people browse at the top level are the files a wheel holds): one YAML
per experiment, with its docs. ``sedweak recipes`` lists them; ``sedweak recipes copy NAME
DIR`` starts one's own.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path


def recipe_dir() -> Path:
    return Path(str(resources.files(__name__)))


def recipe_names() -> list[str]:
    """Names of the shipped recipes (file stems), sorted."""
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The shipped recipe ``name`` (with or without ``.yaml``); FileNotFoundError naming the known ones."""
    path = recipe_dir() / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no recipe {name!r}; shipped recipes: {recipe_names()}")
    return path


def recipe_summary(name: str) -> str:
    """The first comment line of a recipe (what it is)."""
    for line in recipe_path(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def copy_recipe(name: str, folder: str | Path) -> Path:
    """Copy recipe ``name`` into ``folder`` (created); refuses to overwrite. Returns the copy."""
    source = recipe_path(name)
    target = Path(folder) / source.name
    if target.exists():
        raise FileExistsError(f"{target} exists; not overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
