"""Maps the top-level folders onto the gpumesh.* import names (see pyproject.toml)."""

from setuptools import find_packages, setup

package_dir = {}
for top in ("client", "node", "ipfs"):
    for sub in [""] + [f".{p}" for p in find_packages(top)]:
        package_dir[f"gpumesh.{top}{sub}"] = top + sub.replace(".", "/")

setup(packages=sorted(package_dir), package_dir=package_dir)
