"""Train UCoFiA: ``python -m train.main --do_train ...`` or ``torchrun --nproc_per_node N -m train.main ...``.

Flags: ``python -m train.main --help``; ``train/scripts/`` holds each dataset's recipe. With ``--do_eval`` alone it
validates ``--init_model`` (raw metrics) instead of training. The training run gets its per-epoch validation from
``modules.evaluation`` here, so training and evaluation never import each other.
"""
import json
import logging
import os
import shlex
import sys

from modules.common.errors import ConfigError
from modules.common.lock import run_folder
from modules.common.runtime import rank_from_env, run_entry, setup, setup_logging, world_size_from_env
from modules.data import build_split
from modules.evaluation.encoding import validate_split
from modules.model.build import build_model_from_checkpoint
from modules.training.config import parse_args
from modules.training.run import check_batch_layout, run_training

logger = logging.getLogger("ucofia")


def main(argv=None) -> int:
    def run() -> int:
        cfg = parse_args(argv)
        if cfg.do_train:
            check_batch_layout(cfg, world_size_from_env())
        with run_folder(cfg.output_dir, "train.main", is_main=rank_from_env() == 0) as lock:
            rt = setup(cfg.device, cfg.seed, cfg.deterministic)
            setup_logging(rt.rank, os.path.join(cfg.output_dir, "log.txt"))
            if lock.note:
                logger.warning("%s", lock.note)
            if cfg.do_train:
                command = "python -m train.main " + shlex.join(sys.argv[1:] if argv is None else argv)
                run_training(cfg, rt, validate_split, command)
                return 0
            if not cfg.init_model:
                raise ConfigError("--do_eval without --do_train needs --init_model")
            model, _ = build_model_from_checkpoint(cfg.init_model, cfg.model, cfg.precision, rt.device)
            metrics = validate_split(model, build_split(cfg.data, "val"), rt, cfg)
            logger.info("validation of %s: %s", cfg.init_model, json.dumps(metrics))
            return 0

    return run_entry(run)


if __name__ == "__main__":
    sys.exit(main())
