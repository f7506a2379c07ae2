"""``python -m beanstalkc_fast``: the ``beanstalkc-fast`` command line."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
