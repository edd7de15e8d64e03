"""Recipes: one module per seed method, each following the contract of `jaxface.train.driver.Recipe`
(`validate_config`, `load_data`, `make_stages`, `evaluate`, optionally `imported_stages` and
`predict_images`); `driver.train_and_evaluate(recipe, config, workdir)` runs any of them."""

import importlib

RECIPES = {
    "distill": "jaxface.recipes.distill",
    "multitask": "jaxface.recipes.multitask",
}


def get_recipe(name: str):
    if name not in RECIPES:
        raise ValueError(f"config.recipe={name!r} is not a recipe; allowed: {sorted(RECIPES)}")
    return importlib.import_module(RECIPES[name])
