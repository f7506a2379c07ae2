"""Build the optional Cython core ``beanstalkc_fast._cprotocol``.

Metadata lives in pyproject.toml. Environment switches (build time):
  BEANSTALKC_FAST_PUREPYTHON=1         skip the extension: a pure-Python install
  BEANSTALKC_FAST_REQUIRE_EXTENSION=1  a failed compile is an error (wheels, CI)
  BEANSTALKC_FAST_DEBUG=1              annotate HTML and line tracing (coverage)
"""
import os
import platform
import sys

from setuptools import Extension, setup


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


PURE = flag("BEANSTALKC_FAST_PUREPYTHON") or platform.python_implementation() != "CPython"
REQUIRE = flag("BEANSTALKC_FAST_REQUIRE_EXTENSION")
DEBUG = flag("BEANSTALKC_FAST_DEBUG")

ext_modules = []
if not PURE:
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE:
            raise
        sys.stderr.write("beanstalkc_fast: Cython not available, installing the pure-Python backend\n")
    else:
        macros = [("CYTHON_TRACE", "1")] if DEBUG else []
        ext_modules = cythonize(
            [Extension("beanstalkc_fast._cprotocol", ["src/_cprotocol.pyx"], define_macros=macros)],
            annotate=DEBUG,
            compiler_directives={"linetrace": DEBUG},
        )
        # cythonize() returns fresh Extension objects: optional must be set on them.
        for ext in ext_modules:
            ext.optional = not REQUIRE

setup(ext_modules=ext_modules)
