"""Packages of the wheel: every `evol` package, and the shipped data folders that
pyproject.toml maps into it (`[tool.setuptools.package-dir]`); the rest is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["evol", "evol.*"]) + ["evol._data.prompts", "evol._data.seeds"])
