"""The backends, by name. Each is imported only when chosen, so that the
local backend never pays for the Azure or Docker SDK imports."""

import importlib

from ..errors import UsageError
from .base import Backend, TaskEnd, TaskStates

BACKENDS = {
    "local": ("superbatch.backends.local", "LocalBackend"),
    "docker": ("superbatch.backends.docker", "DockerBackend"),
    "azure": ("superbatch.backends.azure", "AzureBackend"),
}


def backend_class(name: str) -> type[Backend]:
    module_name, class_name = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise UsageError(f"--backend {name} is not available in this version of superbatch yet; use --backend local") from None
        raise
    return getattr(module, class_name)


__all__ = ["BACKENDS", "Backend", "TaskEnd", "TaskStates", "backend_class"]
