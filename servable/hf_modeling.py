"""A PruMUX model as transformers sees it: a config, a sequence classifier and a text-classification pipeline.

`export` writes this module into the exported folder (as ``modeling_prumux.py``, beside our model's
own modules, imported relatively) and names its classes in ``config.json``, so the folder loads in
plain transformers with ``trust_remote_code=True``::

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

The pipeline tokenises as the model was trained (padded to its sequence length) and feeds it N
texts per forward pass, in order; the last pass's padding rows are the model's own and dropped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedConfig, PreTrainedModel, TextClassificationPipeline
from transformers.modeling_outputs import SequenceClassifierOutput

from prumux.config import PruMUXConfig
from prumux.model import PruMUXModel

MODEL_TYPE = "prumux"


class PruMUXHFConfig(PreTrainedConfig):
    """transformers' view of a PruMUX model: our config (``prumux``) and the sequence length it was trained at."""

    model_type = MODEL_TYPE

    def __init__(self, prumux: dict[str, Any] | None = None, seq_len: int = 128, **kwargs: Any) -> None:
        self.prumux = dict(prumux or {})
        self.seq_len = int(seq_len)
        super().__init__(**kwargs)

    @property
    def num_instances(self) -> int:
        """N: the texts mixed into one forward pass."""
        return int(self.prumux.get("num_instances", 1))


class PruMUXForSequenceClassification(PreTrainedModel):
    """Our `PruMUXModel` behind transformers' sequence-classification interface; its weights are the folder's own."""

    config_class = PruMUXHFConfig
    base_model_prefix = "prumux"
    main_input_name = "input_ids"

    def __init__(self, config: PruMUXHFConfig) -> None:
        super().__init__(config)
        self.prumux = PruMUXModel(PruMUXConfig.from_dict(config.prumux))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing: every weight comes from the folder."""

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        """Logits [rows, labels]: rows grouped N at a time in order, the last group padded by the model."""
        logits = self.prumux(input_ids, attention_mask, token_type_ids).logits
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class PruMUXClassificationPipeline(TextClassificationPipeline):
    """Text classification N texts per forward pass (a batch size rounded up to a multiple of N), padded to the
    model's sequence length as it was trained."""

    def __call__(self, inputs: Any, *args: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        N = self.model.config.num_instances
        size = batch_size or self._batch_size or N
        return super().__call__(inputs, *args, batch_size=-(-size // N) * N, **kwargs)

    def preprocess(self, inputs: Any, **tokenizer_kwargs: Any) -> dict[str, Tensor]:
        shape = {"padding": "max_length", "truncation": True, "max_length": self.model.config.seq_len}
        return super().preprocess(inputs, **{**tokenizer_kwargs, **shape})
