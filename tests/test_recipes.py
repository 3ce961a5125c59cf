"""The recipes ship inside the package (``sedweak.recipes`` is the top-level recipes/ folder)
and ``sedweak recipes`` lists and copies them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sedweak.cli import main
from sedweak.config import load_config
from sedweak.recipes import copy_recipe, recipe_dir, recipe_names, recipe_path

TOP_LEVEL = Path(__file__).resolve().parents[1] / "recipes"


def test_the_package_recipes_are_the_top_level_folder_and_all_load():
    assert recipe_dir().resolve() == TOP_LEVEL
    assert recipe_names() == sorted(p.stem for p in TOP_LEVEL.glob("*.yaml"))
    assert {"demo", "edge"} <= set(recipe_names())
    for name in recipe_names():
        load_config(recipe_path(name))          # strict: every key known, every value valid


def test_the_demo_reads_the_shipped_recipe():
    from sedweak.demo import demo_recipe

    assert demo_recipe() == recipe_path("demo")


def test_cli_lists_copies_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(main, ["recipes"])
    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.output.splitlines()[:len(recipe_names())]] == recipe_names()
    copied = runner.invoke(main, ["recipes", "copy", "edge", str(tmp_path / "mine")])
    assert copied.exit_code == 0 and (tmp_path / "mine" / "edge.yaml").read_text() == recipe_path("edge").read_text()
    again = runner.invoke(main, ["recipes", "copy", "edge.yaml", str(tmp_path / "mine")])
    assert again.exit_code == 1 and "exists; not overwritten" in again.output
    unknown = runner.invoke(main, ["recipes", "path", "nope"])
    assert unknown.exit_code == 1 and "no recipe 'nope'" in unknown.output and "demo" in unknown.output
    assert copy_recipe("demo", tmp_path).name == "demo.yaml"
