"""All code of the project, once, by stage (reading order and stage map: docs/architecture.md).

    model/       CLIP backbone, tokenizer, the UCoFiA head (token shift, temporal module, patch selection, ISA,
                 the three similarity levels), the loss, published-checkpoint import, model building
    data/        video decoding, frame sampling, transforms, the five datasets, samplers, the synthetic set
    training/    the training run as named steps, the epoch loop, the optimiser, training checkpoints, its CLI
    evaluation/  encoding once, scoring, SK-norm, metrics, the evaluation protocol and CLI, retrieval tools
    common/      process set-up, distributed helpers, atomic file I/O, errors, the dataclass-to-CLI generator

Imports run one way: entry points -> training / evaluation -> model / data -> common. Training and evaluation never
import each other; ``train/main.py`` hands evaluation's validation to the training run.
"""
