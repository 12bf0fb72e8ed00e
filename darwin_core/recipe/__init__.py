"""The Recipe that fully determines a child, and what it is made of.

    from darwin_core.recipe import Recipe, ParentRef, ratio_table, density_table

- `recipe.py`: the `Recipe` itself (validation, canonical form and hash, YAML, per-tensor plan), `GenomeRecord`,
  `TensorPlan`, `recipe_hash`, `load_recipe`;
- `tables.py`: the compact per-tensor tables (`ParamTable`, `ratio_table`, `density_table`) and their roles;
- `refs.py`: `ParentRef`, how a recipe names a parent.

Every name is importable from `darwin_core.recipe` itself, as when this package was one module.
"""

from darwin_core.recipe.recipe import (
    DEFAULT_TRANSPLANT, DTYPES, FORMAT, RECIPE_FILE, GenomeRecord, Recipe, TensorPlan, load_recipe, recipe_hash,
)
from darwin_core.recipe.refs import ParentRef
from darwin_core.recipe.tables import ANY_ROLE, TABLE_ROLES, ParamTable, density_table, ratio_table

__all__ = [
    "ANY_ROLE", "DEFAULT_TRANSPLANT", "DTYPES", "FORMAT", "RECIPE_FILE", "TABLE_ROLES", "GenomeRecord", "ParamTable",
    "ParentRef", "Recipe", "TensorPlan", "density_table", "load_recipe", "ratio_table", "recipe_hash",
]
