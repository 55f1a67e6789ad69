"""The recipe document (load, compose with --set, read, validate, edit, build) and the shipped recipes."""
from .document import SUB_TERMS, LossTerm, RecipeDocument, apply_override, load_recipe, parse_overrides
from .edits import RecipeEdits, quoted
from .shipped import list_recipes, recipe_name, resolve_recipe, shipped_root

__all__ = ['SUB_TERMS', 'LossTerm', 'RecipeDocument', 'RecipeEdits', 'apply_override', 'list_recipes', 'load_recipe',
           'parse_overrides', 'quoted', 'recipe_name', 'resolve_recipe', 'shipped_root']
