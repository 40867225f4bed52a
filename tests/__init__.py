"""bcd's test suite, a regular package so ``tests.*`` imports find it first.

torchstain's wheel installs a top-level ``tests`` package into site-packages,
which would otherwise shadow this folder (a namespace package) and break every
``from tests.… import …``.
"""
