"""gpumesh.client: the pure core, the chain adapter, services and the `gpumesh` CLI."""
