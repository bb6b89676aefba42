"""Sphinx configuration of the flask-utm-tracker documentation (``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import flask_utm_tracker  # noqa: E402

project = "flask-utm-tracker"
author = "flask-utm-tracker developers"
copyright = f"2026, {author}"
release = flask_utm_tracker.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx_click",
    "utm_docs",
]
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

html_theme = "furo"
html_title = f"flask-utm-tracker {release}"
pygments_style = "friendly"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
