"""Sphinx configuration for pyro_lvm."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "pyro_lvm"
author = "pyro_lvm developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.doctest", "sphinx.ext.mathjax", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
html_theme = "alabaster"
exclude_patterns = ["_build"]
doctest_global_setup = """
import torch, pyro
pyro.set_rng_seed(0)
"""
# Plain ">>>" blocks in docstrings run under pytest --doctest-modules with their
# module's globals; Sphinx runs the explicit ".. doctest::" blocks.
doctest_test_doctest_blocks = ""
