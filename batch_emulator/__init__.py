"""Azure Batch on this machine: a real HTTP server for the real azure-batch SDK.

See README.md in this directory. In-process use::

    from batch_emulator import start_emulator
"""

from .server import EmulatorHandle, start_emulator

__all__ = ["start_emulator", "EmulatorHandle"]
