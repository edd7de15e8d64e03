"""Recipes: one module per seed method, each following the contract in `jaxface.train.driver`
(`validate_config`, `load_data`, `make_stages`, `evaluate`, `EXPORT`, `input_format`; optionally
`imported_stages` and `predict_images`); `driver.train_and_evaluate(recipe, config, workdir)` runs any
of them, `experiments.evaluate` / `experiments.export` / `experiments.predict` use a finished one."""

import importlib

RECIPES = {
    "distill": "jaxface.recipes.distill",
    "multitask": "jaxface.recipes.multitask",
    "mutual": "jaxface.recipes.mutual",
    "semi_distill": "jaxface.recipes.semi_distill",
    "sr_recognition": "jaxface.recipes.sr_recognition",
}


def get_recipe(name: str):
    if name not in RECIPES:
        raise ValueError(f"config.recipe={name!r} is not a recipe; allowed: {sorted(RECIPES)}")
    return importlib.import_module(RECIPES[name])
