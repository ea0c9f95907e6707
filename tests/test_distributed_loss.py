"""The chunked, multi-process sigmoid loss equals the single-process loss on the global batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from siglip_search.loss import distributed_sigmoid_loss, sigmoid_logits, sigmoid_loss

WORLD, LOCAL, DIM = 2, 3, 8


def _global_batch():
    gen = torch.Generator().manual_seed(7)
    text = torch.nn.functional.normalize(torch.randn(WORLD * LOCAL, DIM, generator=gen), dim=-1)
    image = torch.nn.functional.normalize(torch.randn(WORLD * LOCAL, DIM, generator=gen), dim=-1)
    return text, image, torch.tensor([2.3]), torch.tensor([-4.0])


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    text, image, scale, bias = _global_batch()
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    t = text[rows].clone().requires_grad_()
    i = image[rows].clone().requires_grad_()
    s, b = scale.clone().requires_grad_(), bias.clone().requires_grad_()
    loss = distributed_sigmoid_loss(t, i, s, b)
    loss.backward()
    # Data-parallel training averages parameter gradients over processes.
    for g in (s.grad, b.grad):
        dist.all_reduce(g)
        g /= WORLD
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    # Plain lists: tensors sent through a queue share file descriptors that vanish when this
    # process exits before the parent reads them.
    grads = [g.tolist() for g in (t.grad / WORLD, i.grad / WORLD, s.grad, b.grad)]
    queue.put((rank, (mean_loss / WORLD).item(), *grads))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_processes_give_the_single_process_loss_and_gradients():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in range(WORLD))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    text, image, scale, bias = (x.clone().requires_grad_() for x in _global_batch())
    loss = sigmoid_loss(sigmoid_logits(text, image, scale, bias))
    loss.backward()
    for rank, dist_loss, *grads in results:
        t_grad, i_grad, s_grad, b_grad = (torch.tensor(g) for g in grads)
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        assert dist_loss == pytest.approx(loss.item(), rel=1e-5)
        torch.testing.assert_close(t_grad, text.grad[rows], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(i_grad, image.grad[rows], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(s_grad, scale.grad, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b_grad, bias.grad, atol=1e-6, rtol=1e-5)
