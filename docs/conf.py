"""Sphinx configuration of trio_aio's documentation (``./dev docs`` builds it).

Offline by design: no intersphinx (its inventories would be fetched from the
network at every fresh build, and ``./dev test`` builds the docs), so names
of trio, anyio and the standard library are shown as written, unlinked; and
``nitpicky`` stays off, since without the inventories every such name would
be a warning.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio_aio

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "trio_aio"
author = "The trio_aio developers"
copyright = "the trio_aio developers"
release = trio_aio.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "trio_aio_docs",  # _ext/: .. source-notes::, the benchmarks page's results
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
pygments_style = "default"

# The docstrings are Google style (Args:, Returns:, Raises:, Attributes:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = False  # Attributes: become .. attribute:: entries (no :members: on them)

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "sphinx_rtd_theme"
html_title = f"trio_aio {release}"
html_show_sourcelink = False
html_theme_options = {"navigation_depth": 3}
