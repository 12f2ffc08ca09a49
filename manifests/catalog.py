"""The catalog: built-in recipes plus every *.toml in the user's catalog directories."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from manifests.errors import RecipeError, UnknownPackError
from manifests.recipe import Recipe, load_recipe


def builtin_dir() -> Path:
    # Beside this file, as importlib.resources.files() would say, without importing it at start-up.
    return Path(__file__).with_name("packs")


@dataclass
class Catalog:
    recipes: dict[str, Recipe] = field(default_factory=dict)
    errors: list[RecipeError] = field(default_factory=list)

    def get(self, pack_id: str) -> Recipe:
        if pack_id in self.recipes:
            return self.recipes[pack_id]
        broken = [e for e in self.errors if Path(e.source).stem == pack_id]
        if broken:
            raise broken[0]
        raise UnknownPackError(
            f"unknown pack {pack_id!r}",
            hint=f"known packs: {', '.join(sorted(self.recipes)) or '(none)'}; `devops-cp data list` shows them",
        )


def load_catalog(extra_dirs: list[Path] = ()) -> Catalog:
    """Later directories override earlier ones: a site's recipe replaces a built-in of the same id.

    One bad file is recorded in `errors` and does not hide the others.
    """
    catalog = Catalog()
    for directory in [builtin_dir(), *extra_dirs]:
        for path in sorted(Path(directory).expanduser().glob("*.toml")):
            try:
                recipe = load_recipe(path)
            except RecipeError as exc:
                catalog.errors.append(exc)
                continue
            catalog.recipes[recipe.id] = recipe
    return catalog
