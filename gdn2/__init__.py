"""gdn2: Gated DeltaNet-2 kernels, layers, models, training and evaluation."""

from . import ops

__version__ = "0.1.0"
__all__ = ["ops"]

try:  # the language models need transformers (pip install "gdn2[hf]"); the core install is torch only
    import transformers as _transformers  # noqa: F401
except ImportError:
    pass
else:  # registers model_type "gdn2" with the Auto classes, so from_pretrained(dir) works after import gdn2
    from . import models

    __all__.append("models")
