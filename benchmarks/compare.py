"""Compare beanstalkc_fast with its peers and raw sockets: a wrapper of ``python -m beanstalkc_fast.bench``.

    python benchmarks/compare.py --quick
    python benchmarks/compare.py --help
"""
import os
import sys

try:
    from beanstalkc_fast.bench import main
except ImportError:     # a bare checkout, run as a script: use the package next to this directory
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from beanstalkc_fast.bench import main

if __name__ == "__main__":
    sys.exit(main())
