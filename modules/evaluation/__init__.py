"""Evaluation: encoding every test text and video once and scoring in blocks (``encoding``), Sinkhorn-Knopp
normalisation (``sinkhorn``), retrieval metrics (``metrics``), the evaluation protocol behind ``eval_t2v`` and
``eval_v2t`` (``protocol``), its command line (``config``), and retrieval on your own videos (``retrieval``).

May import ``modules.model``, ``modules.data`` and ``modules.common``; never ``modules.training``.
"""
