"""The watchtower: checks submitted results and wins the dispute games of wrong ones (tower.py), its
pure sampling and comparison rules (checker.py) and its metrics (metrics.py). Built by
`gpumesh watchtower run`."""
