"""Recipes: one module per seed method. Each exposes `validate_config(config)` and
`train_and_evaluate(config, workdir, mesh=None) -> dict` (the results it wrote)."""

import importlib

RECIPES = {
    "distill": "jaxface.recipes.distill",
    "multitask": "jaxface.recipes.multitask",
}


def get_recipe(name: str):
    if name not in RECIPES:
        raise ValueError(f"config.recipe={name!r} is not a recipe; allowed: {sorted(RECIPES)}")
    return importlib.import_module(RECIPES[name])
