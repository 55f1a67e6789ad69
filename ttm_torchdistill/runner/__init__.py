"""The `ttm-distill` command: recipes in, trained students and readable results out."""
