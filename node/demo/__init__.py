"""The end-to-end demo story (`gpumesh demo run`), built only from the product's own parts."""
