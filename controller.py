"""The command you run: `python controller.py --help` lists the options.

Stages the inputs that task.py defines, runs every task on a backend (local
by default, docker or azure), collects the outputs into runs/<run>/ and
prints the aggregate as the last line of standard output. The machinery is
in the superbatch/ package.
"""

import sys

from superbatch.cli import main

if __name__ == "__main__":
    sys.exit(main())
