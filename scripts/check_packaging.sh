#!/usr/bin/env bash
# Local packaging checks (`make check-packaging`); the CI workflows do the same on real runners.
#  1. the workflow files parse, and every action is pinned by a full commit SHA
#  2. cibuildwheel (the version wheels.yml pins) lists the intended builds per platform
#  3. `python -m build` makes an sdist and, from it, a wheel with the compiled core (from a copy of
#     the tree, so that the build's own leftovers, src/_cprotocol.c among them, stay out of it);
#     `twine check --strict` passes on both
#  4. the wheel holds _cprotocol's binary (stripped, on Linux), py.typed, the .pyi and LICENSE, the
#     small bench module, and no .pyx/.c and no comparison harness (no file naming its peers or its
#     C reference client); the sdist holds src/_cprotocol.pyx, LICENSE and benchmarks/ (compare.py,
#     refclient.c) and no generated C; the README (the PyPI page) has no relative links
#  5. the sdist installs with no C compiler (CC=false): BACKEND == 'python';
#     and with BEANSTALKC_FAST_REQUIRE_EXTENSION=1 that same install fails
#  6. the checkout is as it was (git status, ignored files included)
# Needs python3 with venv and network access to the package index. Leaves nothing behind.
# Runs in CI: .ci/run and tests.yml's packaging job.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
GIT_STATUS=
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    GIT_STATUS=$(git status --porcelain --ignored)
fi
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
failures=0
ok() { echo "ok:   $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

echo "== tools (in $WORK/tools)"
"$PYTHON" -m venv "$WORK/tools"
T=$WORK/tools/bin/python
CIBW_VERSION=$(sed -n 's|.*pypa/cibuildwheel@[0-9a-f]\{40\} *# *v\([0-9.]*\).*|\1|p' .github/workflows/wheels.yml | head -n1)
"$T" -m pip install -q --upgrade pip >"$WORK/pip.log" 2>&1
"$T" -m pip install -q build twine PyYAML "cibuildwheel==${CIBW_VERSION:?wheels.yml pins no cibuildwheel version}" >>"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; exit 1; }

echo "== 1. workflow files"
"$T" - <<'EOF' && ok "workflows parse; every action is pinned by SHA" || fail "workflow files (see above)"
import glob, re, sys, yaml
bad = 0
files = sorted(glob.glob(".github/workflows/*.yml")) + [".github/dependabot.yml"]
for path in files:
    with open(path) as f:
        text = f.read()
    yaml.safe_load(text)
    for line in text.splitlines():
        m = re.search(r"uses:\s*(\S+)", line)
        if m and not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", m.group(1)):
            print("%s: not pinned by a full SHA: %s" % (path, line.strip())); bad += 1
        elif m and not re.search(r"#\s*v\d", line):
            print("%s: no version comment: %s" % (path, line.strip())); bad += 1
print("parsed:", ", ".join(files))
sys.exit(bad)
EOF

echo "== 2. cibuildwheel $CIBW_VERSION build identifiers"
# The platform/arch pairs of the wheels.yml matrix, and the tags each must yield for cp38..cp313
# (but cp38-macosx_arm64, which cibuildwheel cannot test, so pyproject.toml skips it).
for spec in "linux x86_64 manylinux_x86_64 musllinux_x86_64" "linux aarch64 manylinux_aarch64" \
            "macos x86_64,arm64 macosx_x86_64 macosx_arm64" "windows AMD64 win_amd64"; do
    set -- $spec
    platform=$1 archs=${2//,/ }
    shift 2
    if ids=$(CIBW_ARCHS="$archs" "$WORK/tools/bin/cibuildwheel" --print-build-identifiers --platform "$platform" 2>&1); then
        echo "$platform ($archs): $(echo $ids)"
        expected=$(for tag in "$@"; do for v in 38 39 310 311 312 313; do echo "cp$v-$tag"; done; done \
                   | grep -vx cp38-macosx_arm64 | sort)
        [ "$(echo "$ids" | sort)" = "$expected" ] || fail "$platform ($archs): expected $(echo $expected)"
    else
        echo "$ids" | tail -n 3; fail "cibuildwheel --platform $platform"
    fi
done

echo "== 3. python -m build (sdist, then the wheel from it), twine check"
# A copy of the tree as git sees it (tracked and new files, not ignored ones): the build writes
# src/_cprotocol.c, build/ and the egg-info next to its sources.
mkdir "$WORK/tree"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard | xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _ \
        | tar -c --null -T - | tar -x -C "$WORK/tree"
else
    tar -c --exclude=./.venv --exclude=./build --exclude=./dist . | tar -x -C "$WORK/tree"
fi
if (cd "$WORK/tree" && BEANSTALKC_FAST_REQUIRE_EXTENSION=1 "$T" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1); then
    ok "built: $(cd "$WORK/dist" && echo *)"
else
    tail -n 30 "$WORK/build.log"; fail "python -m build"
fi
if "$WORK/tools/bin/twine" check --strict "$WORK"/dist/* >"$WORK/twine.log" 2>&1; then
    ok "twine check --strict"
else
    cat "$WORK/twine.log"; fail "twine check --strict"
fi

echo "== 4. contents"
"$T" - "$WORK/dist" <<'EOF' && ok "wheel and sdist contents" || fail "wheel/sdist contents (see above)"
import fnmatch, glob, os, sys, tarfile, zipfile
dist = sys.argv[1]
bad = 0
def check(what, names, present, absent):
    global bad
    for pat in present:
        if not fnmatch.filter(names, pat):
            print("%s lacks %s" % (what, pat)); bad += 1
    for pat in absent:
        for name in fnmatch.filter(names, pat):
            print("%s must not hold %s" % (what, name)); bad += 1
wheels = glob.glob(os.path.join(dist, "*.whl"))
sdists = glob.glob(os.path.join(dist, "*.tar.gz"))
if len(wheels) != 1 or len(sdists) != 1:
    print("expected one wheel and one sdist, got", wheels, sdists); sys.exit(1)
names = zipfile.ZipFile(wheels[0]).namelist()
print("wheel:", os.path.basename(wheels[0]))
print("   ", " ".join(sorted(n for n in names if ".dist-info/" not in n)))
check("wheel", names,
      ["beanstalkc_fast/_cprotocol.*.so", "beanstalkc_fast/py.typed", "beanstalkc_fast/_cprotocol.pyi",
       "beanstalkc_fast/__init__.py", "beanstalkc_fast/_pyprotocol.py", "beanstalkc_fast/testing.py",
       "beanstalkc_fast/bench.py",
       "*.dist-info/*LICENSE"],
      ["*.pyx", "*.pxi", "*.pxd", "*.c", "*.h", "*refclient*", "*compare.py", "src/*", "tests/*", "benchmarks/*"])
with zipfile.ZipFile(wheels[0]) as whl:
    # The comparison harness (peers, C reference clients) stays in benchmarks/: no file of the
    # package names a peer client or the C client (the small bench module measures this client only).
    for name in names:
        if name.endswith(".py"):
            text = whl.read(name).decode("utf-8")
            for word in ("greenstalk", "beanstalkc3", "pystalk", "aiostalk", "refclient"):
                if word in text:
                    print("wheel's %s mentions %s: the bench harness belongs in benchmarks/" % (name, word)); bad += 1
    for name in fnmatch.filter(names, "beanstalkc_fast/_cprotocol.*.so"):
        data = whl.read(name)
        print("    %s: %d bytes" % (name, len(data)))
        # An ELF file names its sections in .shstrtab: a stripped one has no .symtab, no .debug_*.
        if data[:4] == b"\x7fELF" and (b".symtab" in data or b".debug_info" in data):
            print("wheel's %s is not stripped (debug info or symbol table)" % name); bad += 1
top = os.path.basename(sdists[0])[:-len(".tar.gz")]
names = [n.split("/", 1)[1] for n in tarfile.open(sdists[0]).getnames() if "/" in n]
print("sdist:", os.path.basename(sdists[0]))
print("   ", " ".join(sorted(n for n in names if not n.endswith("/"))))
check("sdist", names,
      ["src/_cprotocol.pyx", "src/_reader.pxi", "src/_encode.pxi", "src/_checks.pxi", "src/_yaml.pxi",
       "src/_blocking.pxi", "setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "LICENSE",
       "beanstalkc_fast/py.typed", "beanstalkc_fast/_cprotocol.pyi", "tests/conftest.py",
       "benchmarks/compare.py", "benchmarks/refclient.c"],
      ["src/*.c", "*.so", "*.pyc"])
import re
with open("README.md") as f:    # PyPI shows it with no repository around it: every link absolute
    for link in re.findall(r"\]\(([^)\s]+)", f.read()):
        if not re.match(r"(https?://|mailto:|#)", link):
            print("README.md: relative link %s (broken on PyPI)" % link); bad += 1
sys.exit(bad)
EOF

echo "== 5. sdist install without a compiler"
SDIST=$(echo "$WORK"/dist/*.tar.gz)
"$PYTHON" -m venv "$WORK/nocc"
if (cd "$WORK" && CC=false nocc/bin/pip install -q "$SDIST" >"$WORK/nocc.log" 2>&1); then
    backend=$(cd "$WORK" && nocc/bin/python -c 'import beanstalkc_fast; print(beanstalkc_fast.BACKEND)')
    [ "$backend" = python ] && ok "CC=false install: BACKEND == 'python'" \
        || fail "CC=false install: BACKEND == '$backend', expected 'python'"
else
    tail -n 30 "$WORK/nocc.log"; fail "CC=false pip install of the sdist"
fi
"$PYTHON" -m venv "$WORK/require"
if (cd "$WORK" && CC=false BEANSTALKC_FAST_REQUIRE_EXTENSION=1 require/bin/pip install -q "$SDIST" >"$WORK/require.log" 2>&1); then
    fail "CC=false with BEANSTALKC_FAST_REQUIRE_EXTENSION=1 installed anyway"
else
    ok "CC=false with BEANSTALKC_FAST_REQUIRE_EXTENSION=1: the install fails, as it must"
fi

echo "== 6. the checkout is untouched"
if [ -n "$GIT_STATUS" ] || git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    if [ "$(git status --porcelain --ignored)" = "$GIT_STATUS" ]; then
        ok "git status unchanged"
    else
        diff <(echo "$GIT_STATUS") <(git status --porcelain --ignored) || true
        fail "the checks left files in the checkout"
    fi
fi

if [ "$failures" -gt 0 ]; then
    echo "check_packaging: $failures check(s) failed"
    exit 1
fi
echo "check_packaging: all checks passed"
