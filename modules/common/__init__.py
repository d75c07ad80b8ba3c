"""Run-time plumbing shared by every stage: process set-up and logging (``runtime``), cross-rank gathers
(``distributed``), atomic file writes and safe checkpoint reads (``io``), state-dict comparison (``state_dicts``), the
user-facing error classes (``errors``) and the dataclass-to-argparse generator (``cli``).

Imports nothing from the rest of ``modules``.
"""
