"""Training: the run as named steps (``run``: build, resume, epoch, validate, checkpoint), the epoch loop
(``engine``), the published BertAdam and its schedule (``optim``), training checkpoints and their state
(``checkpoint``), and the training command line (``config``).

May import ``modules.model``, ``modules.data`` and ``modules.common``; never ``modules.evaluation`` (validation is
handed in by ``train/main.py``).
"""
