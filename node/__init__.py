"""gpumesh.node: the torch runtime, the worker and watchtower daemons, dispute strategies."""
