"""Import checkpoints of the published UCoFiA code (github Ziyang412/UCoFiA) by an explicit key map.

The published model keeps CLIP under ``clip.*`` with OpenAI's names, except that wrapping the attention of the shifted
ViT blocks for the token shift renamed it to ``...resblocks.{10,11}.attn.net.*``. Its other parameters map one to one
onto ours (``KEY_MAP``, ``PREFIX_MAP``); the frame position table has CLIP's 77 text positions, of which the model
uses the first ``max_frames``. Parameters the published model creates but never uses (``UNUSED_KEYS``) are dropped
by name; any other unknown, missing or misshapen key is a ``CheckpointError`` that lists them. Why the shifted
blocks' keys matter: docs/architecture.md, "Reload reverts the shifted blocks".
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn, Optional

import torch

from modules.common.errors import CheckpointError

if TYPE_CHECKING:
    from modules.model.ucofia import UCoFiA

logger = logging.getLogger(__name__)

# Published name -> ours.
KEY_MAP = {
    "global_mat_weight": "levels.sentence_proj",
    "global_mat_weight_1": "levels.video_proj",
    "frame_logit_weight": "levels.frame_isa",
    "local_mat_weight": "levels.word_proj",
    "local_mat_weight1": "levels.patch_proj",
    "word_mat_weight": "levels.word_isa",
    "pixel_mat_weight": "levels.patch_isa",
    "pixel_mat_weight2": "levels.patch_isa_2",
    "word_mat_weight2": "levels.word_isa_2",
    "frame_position_embeddings.weight": "temporal.frame_position_embeddings",
}
# Published prefix -> ours (the scorer's nn.Sequential indices become named layers).
PREFIX_MAP = {
    "visual_token_selector.score_predictor.in_conv.0.": "patch_scorer.norm.",
    "visual_token_selector.score_predictor.in_conv.1.": "patch_scorer.down.",
    "visual_token_selector.score_predictor.out_conv.0.": "patch_scorer.hidden.",
    "visual_token_selector.score_predictor.out_conv.2.": "patch_scorer.out.",
    "transformerClip.": "temporal.transformer.",
    "clip.": "clip.",
}
# Created by the published model, never used in its forward pass (docs/architecture.md, "Kept on purpose").
UNUSED_KEYS = ("word_logit_weight", "frame_mat_weight", "frame_mat_weight2", "word_mat_weight_for_pixel")
SHIFT_WRAPPER = ".attn.net."
VISUAL_BLOCKS = "clip.visual.transformer.resblocks."


def _strip_ddp_prefix(state_dict: dict) -> dict:
    """Drop the ``module.`` prefix of a state dict saved from a DistributedDataParallel wrapper."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def is_published_state_dict(state_dict: dict) -> bool:
    """True for a state dict in the published code's layout (as opposed to ours)."""
    keys = _strip_ddp_prefix(state_dict).keys()
    return "global_mat_weight" in keys or any(k.startswith("visual_token_selector.") for k in keys)


def published_clip_state_dict(state_dict: dict) -> dict[str, torch.Tensor]:
    """The CLIP backbone of a published checkpoint in OpenAI's layout (``clip.`` dropped, shift wrapper undone), for
    building the backbone before the whole model is imported."""
    state_dict = _strip_ddp_prefix(state_dict)
    return {k[len("clip."):].replace(SHIFT_WRAPPER, ".attn."): v for k, v in state_dict.items()
            if k.startswith("clip.")}


def _our_key(key: str, shifted: set[int]) -> Optional[str]:
    """Our name of a published key, or None if it is not part of the map."""
    if key in KEY_MAP:
        return KEY_MAP[key]
    prefix = next((p for p in PREFIX_MAP if key.startswith(p)), None)
    if prefix is None:
        return None
    ours = PREFIX_MAP[prefix] + key[len(prefix):]
    if SHIFT_WRAPPER in ours:
        block = ours[len(VISUAL_BLOCKS):].split(".")[0] if ours.startswith(VISUAL_BLOCKS) else ""
        if not block.isdigit() or int(block) not in shifted:
            return None  # a shift wrapper where this model has no shift: reported as unexpected
        ours = ours.replace(SHIFT_WRAPPER, ".attn.")
    return ours


def _fail(problem: str, keys: list[str], hint: str = "") -> NoReturn:
    shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
    raise CheckpointError(f"published checkpoint: {problem}: {shown}{hint}")


def import_published_state_dict(state_dict: dict, model: "UCoFiA") -> dict[str, torch.Tensor]:
    """Translate a published UCoFiA state dict into ``model``'s keys, ready for a strict ``load_state_dict``.

    Args:
        state_dict: the published checkpoint (``pytorch_model.bin.N``), optionally with a ``module.`` prefix.
        model: the model it is for; its configuration (scorer variant, temporal module, shifted blocks, sizes) must
            match the checkpoint's.
    Returns:
        Our state dict, values cast to our parameter dtypes.
    """
    state_dict = _strip_ddp_prefix(state_dict)
    own = model.state_dict()
    shifted = set(model.shifted_layers)
    ours: dict[str, torch.Tensor] = {}
    unexpected, dropped = [], []
    for key, value in state_dict.items():
        if key in UNUSED_KEYS:
            dropped.append(key)
            continue
        name = _our_key(key, shifted)
        if name is None or name not in own:
            unexpected.append(key)
        elif name in ours:
            _fail("two keys map to the same parameter", [key, name])
        else:
            ours[name] = value
    if unexpected:
        hint = ""
        if any(SHIFT_WRAPPER in k for k in unexpected):
            hint = f" (it was trained with token shift in other blocks than {sorted(shifted)}; check --shift_layers)"
        elif any(k.startswith(("transformerClip.", "frame_position_embeddings")) for k in unexpected):
            hint = " (it was trained with --sim_header seqTransf)"
        _fail("keys this model does not have", sorted(unexpected), hint)
    positions = ours.get("temporal.frame_position_embeddings")
    if positions is not None:
        needed = own["temporal.frame_position_embeddings"].shape[0]
        if positions.shape[0] < needed:
            _fail(f"frame position table has {positions.shape[0]} rows for {needed} frames",
                  ["frame_position_embeddings.weight"])
        ours["temporal.frame_position_embeddings"] = positions[:needed]  # the remaining rows are never used
    missing = sorted(set(own) - set(ours))
    if missing:
        _fail("keys missing", missing, " (trained with --sim_header meanP?)" if any("temporal" in k for k in missing)
              else "")
    scorer = own["patch_scorer.norm.weight"].shape[0], ours["patch_scorer.norm.weight"].shape[0]
    if scorer[0] != scorer[1]:
        variant = "video" if scorer[1] == 2 * model.clip.config.embed_dim else "frame"
        _fail(f"its patch scorer is the '{variant}' variant; run with --patch_scorer {variant}",
              ["visual_token_selector.score_predictor.in_conv.0.weight"])
    wrong = sorted(k for k in own if tuple(own[k].shape) != tuple(ours[k].shape))
    if wrong:
        _fail("shapes differ from this model's (check --max_words, --max_frames, --topk)",
              [f"{k} {tuple(ours[k].shape)} vs {tuple(own[k].shape)}" for k in wrong])
    if dropped:
        logger.info("published checkpoint: dropped parameters the model never uses: %s", ", ".join(sorted(dropped)))
    return {k: ours[k].to(own[k].dtype) for k in own}
