"""Sphinx helpers for trio_aio's documentation: what is written beside the code, shown once.

``.. source-notes:: trio_aio/_ring/_engine.py`` puts a module's docstring on a
page (read from the source with :mod:`ast`, never imported, so every
platform's modules can be shown anywhere) as a section titled with the file's
path; its own section titles become subsections. A ``.c`` file gives its
first comment block, as a literal block. The page is rebuilt when the file
changes.

The benchmarks page ends with the suite's last results if ``./dev bench``
has left them in ``benchmarks/results/`` (they are not in git), or with how
to produce them; it is read again at every build, so it follows them.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

ROOT = Path(__file__).resolve().parents[2]  # the repository (or unpacked sdist)
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_PAGE = "benchmarks"


def _docstring(path: Path) -> list[str]:
    """The module docstring of a Python file, or the first comment block of a C file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".c":
        match = re.match(r"\s*/\*(.*?)\*/", text, re.DOTALL)
        if not match:
            raise ValueError(f"{path} does not start with a comment")
        lines = [re.sub(r"^\s*\* ?", "", line) for line in match.group(1).splitlines()]
        body = "\n".join(lines).strip("\n")
        return ["::", "", *("    " + line if line else "" for line in body.splitlines())]
    docstring = ast.get_docstring(ast.parse(text), clean=True)
    if not docstring:
        raise ValueError(f"{path} has no module docstring")
    return docstring.splitlines()


class SourceNotes(SphinxDirective):
    """A section holding one source file's docstring, titled with its path."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        """Parse the docstring, with its titles, into a section of its own."""
        relative = self.arguments[0]
        path = ROOT / relative
        if not path.is_file():
            raise self.error(f"source-notes: no such file {relative!r} (from {ROOT})")
        self.env.note_dependency(str(path))
        try:
            lines = _docstring(path)
        except ValueError as exc:
            raise self.error(f"source-notes: {exc}") from None
        title = relative.removeprefix("trio_aio/")
        section = nodes.section()
        section += nodes.title(title, "", nodes.literal(title, title))
        section["names"].append(nodes.fully_normalize_name(title))
        self.state.document.note_implicit_target(section, section)
        content = StringList()
        for number, line in enumerate(lines):
            # (the docstring starts on the file's line 1 or 2: near enough to find it)
            content.append(line, str(path), number + 1)
        nested_parse_with_titles(self.state, content, section)
        return [section]


def _bench_results(app: Sphinx, docname: str, source: list[str]) -> None:
    """End the benchmarks page with the results, if ``./dev bench`` left some."""
    if docname != BENCHMARKS_PAGE:
        return
    chart, table = RESULTS / "suite.png", RESULTS / "suite.md"
    if chart.is_file() and table.is_file():
        # (paths relative to the page, as the image and include directives want them)
        chart_path = os.path.relpath(chart, app.srcdir)
        table_path = os.path.relpath(table, app.srcdir)
        lines = table.read_text(encoding="utf-8").splitlines()
        heading = lines[0].lstrip("# ") if lines else "the benchmark suite"
        text = f"""
## The last run here

`./dev bench` left these in `benchmarks/results/` (not in git): {heading},
on the machine that built these pages.

```{{image}} {Path(chart_path).as_posix()}
:alt: the benchmark suite's chart (benchmarks/results/suite.png)
```

```{{include}} {Path(table_path).as_posix()}
:start-line: 1
```
"""
    else:
        text = """
## The last run here

There is none: `benchmarks/results/` (not in git) holds no `suite.png` and
`suite.md`. Run `./dev bench`, then `./dev docs`, and this section shows
the chart and the tables of that run.
"""
    source[0] += text


def _always_read_benchmarks(
    app: Sphinx, env: Any, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Read the benchmarks page at every build: the results come and go outside Sphinx."""
    return [BENCHMARKS_PAGE] if BENCHMARKS_PAGE in env.found_docs else []


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive and the benchmarks page's hooks."""
    app.add_directive("source-notes", SourceNotes)
    app.connect("source-read", _bench_results)
    app.connect("env-get-outdated", _always_read_benchmarks)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
