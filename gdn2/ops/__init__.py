"""The GDN-2 operator family: one recurrence, three backends (recurrent, chunk, triton)."""

from .gdn2 import (BACKENDS, FAMILY, delta_rule, gated_delta_rule, gated_delta_rule2,
                   gated_linear_attention, kda)
from .utils import l2norm

__all__ = ["BACKENDS", "FAMILY", "delta_rule", "gated_delta_rule", "gated_delta_rule2",
           "gated_linear_attention", "kda", "l2norm"]
