"""The packages, and the search spaces as data inside them.

``search_spaces/`` at the top stays the source a user reads and edits; a wheel carries it as the data package
``ladasearch.search.spaces`` (no code, only the YAML files), which ``SearchSpace.load`` reads first when it is
installed.  The mapping needs ``package_dir``, which pyproject.toml's ``packages.find`` cannot express beside
the found packages.
"""

from setuptools import find_packages, setup

SPACES = "ladasearch.search.spaces"

setup(packages=[*find_packages(include=["ladasearch", "ladasearch.*"]), SPACES],
      package_dir={SPACES: "search_spaces"},
      package_data={SPACES: ["*.yaml"], "ladasearch.cli": ["option_names.json"]})
