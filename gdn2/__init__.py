"""gdn2: Gated DeltaNet-2 kernels, layers, models, training and evaluation."""

from . import ops

__version__ = "0.1.0"
__all__ = ["ops"]
