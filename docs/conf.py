"""Sphinx configuration: guides in Markdown (MyST), the reference by autodoc from the docstrings.

Build with ``make docs`` (warnings are errors). The guides' examples run against a real
beanstalkd in ``tests/test_docs.py``.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))   # the checkout's package (a fresh clone needs no install)

import beanstalkc_fast  # noqa: E402

project = "beanstalkc_fast"
copyright = "beanstalkc_fast developers"
release = version = beanstalkc_fast.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True    # DEFAULT_PRIORITY, not 2147483648
autodoc_default_options = {"members": True, "show-inheritance": True}
# With -n every cross-reference must resolve. The build is offline (no intersphinx), so names of
# the standard library are not links; Body, PutItem, AnyJob and YAMLResult are the annotations'
# aliases, spelled out in api/index.
nitpick_ignore_regex = [
    ("py:class", r"(Body|PutItem|JobId|AnyJob|YAMLResult|Any|.*\._[A-Za-z]\w*)"),
]
html_theme = "alabaster"
html_title = "beanstalkc_fast %s" % release


# Every public name must be in the reference: a name of a module's __all__ that autodoc did not
# document is a warning, hence an error with -W.
PUBLIC = {
    "beanstalkc_fast": None,
    "beanstalkc_fast.aio": None,
    "beanstalkc_fast.testing": None,
}


def _check_public(app, env):
    import importlib
    from sphinx.util import logging
    log = logging.getLogger(__name__)
    documented = set(env.get_domain("py").objects)
    for modname in PUBLIC:
        mod = importlib.import_module(modname)
        for name in mod.__all__:
            full = "%s.%s" % (modname, name)
            same = getattr(beanstalkc_fast, name, None) is getattr(mod, name)
            if full not in documented and not (same and "beanstalkc_fast." + name in documented):
                log.warning("public name %s is not in the API reference", full)


# A constant re-exported by the package has no docstring of its own (autodoc would show int's or
# str's): its documentation is the ``#:`` comment where it is defined.
DEFINED_IN = ["beanstalkc_fast", "beanstalkc_fast.connection", "beanstalkc_fast._backend"]


def _data_doc(app, what, name, obj, options, lines):
    if what != "data":
        return
    from sphinx.pycode import ModuleAnalyzer
    attr = name.rsplit(".", 1)[-1]
    for modname in DEFINED_IN:
        doc = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", attr))
        if doc:
            lines[:] = list(doc)
            return
    lines[:] = []


def _cli_help():
    """Every ``--help`` of the command line, from its own parser."""
    import argparse
    from docutils import nodes
    from sphinx.util.docutils import SphinxDirective
    from beanstalkc_fast import cli

    class CliHelp(SphinxDirective):
        def run(self):
            os.environ["COLUMNS"] = "100"   # argparse wraps to the terminal's width
            parser = cli.build_parser()
            texts = [parser.format_help()]
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    texts += [p.format_help() for p in action.choices.values()]
            return [nodes.literal_block(text, text) for text in texts]
    return CliHelp


def setup(app):
    app.add_directive("cli-help", _cli_help())
    app.connect("env-check-consistency", _check_public)
    app.connect("autodoc-process-docstring", _data_doc)
