"""Temporal token shift against a transcription of the published PatchShiftModule, masking, and installation."""
import pytest
import torch

from modules.model.clip import build_random_clip
from modules.model.token_shift import TemporalTokenShift, apply_token_shift


def published_patch_shift(query, video_frame, n_div):
    """Transcription of the shift in the published PatchShiftModule.forward (input and output LND)."""
    x = query.permute(1, 0, 2)
    patch_len = x.shape[-2]
    fold = patch_len // n_div
    x = x.reshape(-1, video_frame, x.shape[-2], x.shape[-1])
    psm = torch.zeros_like(x)
    psm[:, :, :, :] = x[:, :, :, :]
    lshift_indices = torch.arange(start=1, end=patch_len, step=fold)
    psm[:, 1:, lshift_indices, :] = x[:, :-1, lshift_indices, :]
    rshift_indices = torch.arange(start=1 + 3, end=patch_len, step=fold)
    psm[:, :-1, rshift_indices, :] = x[:, 1:, rshift_indices, :]
    return psm.reshape(-1, patch_len, x.shape[-1]).permute(1, 0, 2)


@pytest.mark.parametrize("frames,tokens", [(12, 50), (4, 50), (3, 197)])
def test_matches_published(frames, tokens):
    x = torch.randn(2 * frames, tokens, 16)
    expected = published_patch_shift(x.permute(1, 0, 2), frames, 7).permute(1, 0, 2)
    assert torch.equal(TemporalTokenShift(frames)(x), expected)
    assert torch.equal(TemporalTokenShift(frames)(x, torch.ones(2, frames, dtype=torch.bool)), expected)


def test_class_token_and_most_positions_stay():
    x = torch.randn(8, 50, 4)
    out = TemporalTokenShift(4)(x)
    assert torch.equal(out[:, 0], x[:, 0])
    moved = set(range(1, 50, 7)) | set(range(4, 50, 7))
    kept = [t for t in range(50) if t not in moved]
    assert torch.equal(out[:, kept], x[:, kept])


def test_padded_frames_do_not_reach_real_ones():
    x = torch.randn(2 * 4, 50, 4)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    other = x.clone().view(2, 4, 50, 4)
    other[0, 2:] = torch.randn(2, 50, 4)
    shift = TemporalTokenShift(4)
    out, out_other = shift(x, mask).view(2, 4, 50, 4), shift(other.view(8, 50, 4), mask).view(2, 4, 50, 4)
    assert torch.equal(out[0, :2], out_other[0, :2]) and torch.equal(out[1], out_other[1])
    assert torch.equal(out[0, 1, 4::7], x.view(2, 4, 50, 4)[0, 1, 4::7])  # the last real frame keeps its own
    unmasked = shift(other.view(8, 50, 4)).view(2, 4, 50, 4)
    assert not torch.equal(unmasked[0, 1], out[0, 1])                    # published: it reads the padded frame


def test_rejects_incomplete_videos():
    with pytest.raises(ValueError):
        TemporalTokenShift(4)(torch.randn(6, 50, 4))
    with pytest.raises(ValueError):
        TemporalTokenShift(4)(torch.randn(8, 50, 4), torch.ones(2, 3, dtype=torch.bool))


def test_install_in_last_blocks_keeps_state_dict():
    clip = build_random_clip("tiny")
    keys = list(clip.state_dict())
    assert apply_token_shift(clip, (-2, -1), n_frames=2) == [2, 3]
    assert list(clip.state_dict()) == keys
    blocks = clip.visual.transformer.resblocks
    assert [b.token_shift is not None for b in blocks] == [False, False, True, True]
    images = torch.randn(2, 3, 224, 224)
    shifted = clip.encode_image(images)
    apply_token_shift(clip, (), n_frames=2)
    assert not torch.allclose(shifted, clip.encode_image(images))
    with pytest.raises(ValueError):
        apply_token_shift(clip, (4,), n_frames=2)
