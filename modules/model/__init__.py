"""The model: OpenAI's CLIP (``clip``, ``tokenizer``), the UCoFiA head (``token_shift``, ``temporal``,
``token_selection``, ``isa``, ``similarity``, ``ucofia``), the feature containers (``features``), the training loss
(``losses``), the published code's checkpoint keys (``published``) and building a model from a CLIP name or a
checkpoint (``build``).

May import ``modules.common`` only: no data, training or evaluation code.
"""
