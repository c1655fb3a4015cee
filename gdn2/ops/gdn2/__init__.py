from .api import (BACKENDS, FAMILY, delta_rule, gated_delta_rule, gated_delta_rule2,
                  gated_linear_attention, kda)
from .chunk import chunk_gdn2
from .recurrent import recurrent_gdn2

__all__ = ["BACKENDS", "FAMILY", "chunk_gdn2", "delta_rule", "gated_delta_rule", "gated_delta_rule2",
           "gated_linear_attention", "kda", "recurrent_gdn2"]
