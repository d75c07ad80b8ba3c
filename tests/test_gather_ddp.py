"""Two gloo processes: gathering with gradient, and a DDP step of the tiny model, against one process."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from modules.common.distributed import all_gather_with_grad, get_rank, get_world_size, is_main_process
from modules.model.clip import resolve_clip
from modules.model.tokenizer import text_mask, tokenize
from modules.model.ucofia import ModelConfig, UCoFiA

WORLD = 2
CAPTIONS = ["a dog runs", "a cat sleeps on a mat", "someone is cooking", "two cars race on a track"]


def _model() -> UCoFiA:
    torch.manual_seed(0)
    return UCoFiA(resolve_clip("random:tiny"), ModelConfig(max_words=8, max_frames=3, topk=2, topk_samples=20))


def _batch():
    g = torch.Generator().manual_seed(7)
    ids = tokenize(CAPTIONS, 8)
    video = torch.randn(4, 3, 3, 224, 224, generator=g)
    vmask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    return ids, text_mask(ids), video, vmask, torch.tensor([101, 102, 103, 104])


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        # Gather with gradient, unequal rows per rank: rank 0 has 3 rows, rank 1 has 2.
        x = (torch.arange(2.0 * (3 - rank)).view(3 - rank, 2) + 10 * rank).requires_grad_()
        gathered = all_gather_with_grad(x)
        weights = torch.arange(10.0).view(5, 2) * (rank + 1)                 # each rank uses every row differently
        (gathered * weights).sum().backward()
        # A DDP step of the model on this rank's half of the batch.
        ddp = DistributedDataParallel(_model())
        rows = slice(2 * rank, 2 * rank + 2)
        loss = ddp(*(t[rows] for t in _batch()))
        loss.backward()
        grads = {n: p.grad for n, p in ddp.module.named_parameters()}
        torch.save({"gathered": gathered.detach(), "x_grad": x.grad, "loss": loss.detach(), "grads": grads,
                    "rank": get_rank(), "world": get_world_size(), "main": is_main_process()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [(r["rank"], r["world"], r["main"]) for r in results] == [(0, 2, True), (1, 2, False)]
    full = torch.cat([torch.arange(6.0).view(3, 2), torch.arange(4.0).view(2, 2) + 10])
    summed = torch.arange(10.0).view(5, 2) * (1 + 2)                        # the weights of both ranks
    for rank, r in enumerate(results):
        assert torch.equal(r["gathered"], full)
        assert torch.equal(r["x_grad"], summed[:3] if rank == 0 else summed[3:])
    assert get_world_size() == 1 and get_rank() == 0 and all_gather_with_grad(full) is full

    model = _model()
    loss = model(*_batch())
    loss.backward()
    torch.testing.assert_close(sum(r["loss"] for r in results) / WORLD, loss.detach(), rtol=1e-5, atol=1e-6)
    for r in results:
        for name, p in model.named_parameters():
            # Relative to the tensor's largest gradient: the tau = 0.01 ISA softmaxes turn float32 summation-order
            # differences between one and two processes into small absolute differences in tiny gradient entries.
            scale = float(p.grad.abs().max())
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-4, atol=max(1e-6, 1e-3 * scale),
                                       msg=lambda m, name=name, scale=scale: f"{name} (largest grad {scale:.3g}): {m}")
