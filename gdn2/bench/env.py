"""The software a measurement ran on, recorded beside every benchmark and experiment result."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Dict, Optional

import torch

import gdn2


def software_versions() -> Dict[str, Optional[str]]:
    """Versions of torch, CUDA, Triton, Python, gdn2 and the optional text stack (None if absent;
    gdn2's from the imported package, so a checkout on the path without an install reports it too).

    >>> sorted(software_versions())[:3]
    ['cuda', 'gdn2', 'python']
    """
    def version(name: str) -> Optional[str]:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"torch": torch.__version__, "cuda": torch.version.cuda, "triton": version("triton"),
            "python": platform.python_version(), "gdn2": gdn2.__version__, "transformers": version("transformers"),
            "tokenizers": version("tokenizers")}
