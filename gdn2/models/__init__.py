"""Language models on the GDN-2 layers, integrated with Hugging Face ``transformers``.

Importing this package registers ``model_type="gdn2"`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM``, so ``AutoModelForCausalLM.from_pretrained(dir)`` loads a saved model.
Needs ``pip install "gdn2[hf]"``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import GDN2Cache
from .configuration import LAYER_KINDS, PRESETS, GDN2Config
from .generation import decode, sample_next
from .modeling import GDN2Block, GDN2ForCausalLM, GDN2Model, GDN2PreTrainedModel

AutoConfig.register(GDN2Config.model_type, GDN2Config, exist_ok=True)
AutoModel.register(GDN2Config, GDN2Model, exist_ok=True)
AutoModelForCausalLM.register(GDN2Config, GDN2ForCausalLM, exist_ok=True)

__all__ = ["GDN2Block", "GDN2Cache", "GDN2Config", "GDN2ForCausalLM", "GDN2Model",
           "GDN2PreTrainedModel", "LAYER_KINDS", "PRESETS", "decode", "sample_next"]
