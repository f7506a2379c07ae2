"""Build the optional Cython core ``beanstalkc_fast._cprotocol``.

Metadata lives in pyproject.toml. Environment switches (build time):
  BEANSTALKC_FAST_PUREPYTHON=1         skip the extension: a pure-Python install
  BEANSTALKC_FAST_REQUIRE_EXTENSION=1  a failed compile is an error (wheels, CI)
  BEANSTALKC_FAST_DEBUG=1              annotate HTML and line tracing (coverage), debug info kept
"""
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


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
        # Release builds carry no debug info (1.29 MB -> 0.2 MB on Linux): -g0 after Python's own -g,
        # and the GNU linker strips the symbol table too. BEANSTALKC_FAST_DEBUG=1 keeps both.
        cflags = ldflags = []
        if not DEBUG and os.name == "posix":
            cflags = ["-g0"]
            ldflags = ["-s"] if sys.platform.startswith("linux") else []
        try:
            ext_modules = cythonize(
                [Extension("beanstalkc_fast._cprotocol", ["src/_cprotocol.pyx"], define_macros=macros,
                           extra_compile_args=cflags, extra_link_args=ldflags)],
                annotate=DEBUG,
                compiler_directives={"linetrace": DEBUG},
            )
            # cythonize() returns fresh Extension objects: optional must be set on them.
            for ext in ext_modules:
                ext.optional = not REQUIRE
        except Exception as err:
            if REQUIRE:
                raise
            sys.stderr.write("beanstalkc_fast: could not cythonize the compiled core (%s); "
                             "installing the pure-Python backend\n" % err)


class BuildExt(build_ext):
    # setuptools' optional=True only logs a vague warning: say plainly what was installed.
    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:
            if REQUIRE:
                raise
            sys.stderr.write("beanstalkc_fast: could not build the compiled core (%s: %s); "
                             "installing the pure-Python backend\n" % (type(err).__name__, err))


setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
