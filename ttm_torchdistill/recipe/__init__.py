"""The recipe document (load, compose with --set, read, validate, edit, build), its view (structural questions) and
the shipped recipes."""
from .document import SUB_TERMS, LossTerm, RecipeDocument, apply_override, compose_scalar, load_recipe, parse_overrides
from .edits import RecipeEdits, quoted
from .shipped import list_recipes, recipe_name, resolve_recipe, shipped_root
from .view import RecipeView

__all__ = ['SUB_TERMS', 'LossTerm', 'RecipeDocument', 'RecipeEdits', 'RecipeView', 'apply_override', 'compose_scalar',
           'list_recipes', 'load_recipe', 'parse_overrides', 'quoted', 'recipe_name', 'resolve_recipe', 'shipped_root']
