"""superbatch: fan a Python for-loop out to worker processes, Docker or Azure Batch.

The public surface is the command line (controller.py) and the four
functions of task.py; everything in this package is the machinery behind it.
"""

__version__ = "0.1.0"
