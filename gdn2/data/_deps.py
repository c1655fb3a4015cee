"""Optional dependencies, imported when first used so that ``import gdn2.data`` needs only torch."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that says which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{purpose} needs the '{module.split('.')[0]}' package: "
                          f"pip install 'gdn2[{extra}]'") from e
