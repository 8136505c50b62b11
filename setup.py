"""The one packaging fact pyproject.toml cannot state: the notebooks and data samples stay at the repository's top
level (where a reader looks for them) and ship inside the wheel as ``medwb/notebooks`` and ``medwb/data_samples``.

pyproject's ``packages.find`` cannot add packages from outside ``medwb/``, so the package list is found here
(every ``medwb`` subpackage, as before) plus the two resource packages mapped by ``package_dir``. Which files ship
is listed in pyproject.toml (``[tool.setuptools.package-data]``); ``medwb.resources`` finds them at run time.
Everything else lives in pyproject.toml.
"""
from setuptools import find_packages, setup

RESOURCE_PACKAGES = {"medwb.notebooks": "notebooks", "medwb.data_samples": "data_samples"}

setup(
    packages=find_packages(include=["medwb", "medwb.*"]) + list(RESOURCE_PACKAGES),
    package_dir=RESOURCE_PACKAGES,
)
