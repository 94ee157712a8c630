"""Training the captioner is bit-reproducible with several torch threads: the same batch gives the same
gradients every time. Session 10 found two quickstart captioner runs on the same data ending with
different weights at two threads (equal at one): the decoder's learned positions were read with tensor
indexing, whose backward sums the repeated positions with atomic adds on a multi-threaded CPU."""

import torch
import torch.nn.functional as F

from videogen.models.captioner import VideoCaptioner


def gradients(model: VideoCaptioner, video: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits, _ = model.decode(model.encode(video), ids)
    F.cross_entropy(logits.flatten(0, 1), ids.roll(-1, 1).flatten()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_same_batch_gives_the_same_gradients_with_two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = VideoCaptioner(vocab_size=64, dim=64, depth=1, heads=2, max_length=128, channels=(8, 16),
                               num_frames=4, grid=(2, 2))
        g = torch.Generator().manual_seed(1)
        video, ids = torch.rand(8, 3, 9, 32, 48, generator=g) * 2 - 1, torch.randint(0, 64, (8, 100), generator=g)
        first = gradients(model, video, ids)
        assert "decoder.pos" in first
        for _ in range(8):
            again = gradients(model, video, ids)
            assert [n for n in first if not torch.equal(first[n], again[n])] == []
    finally:
        torch.set_num_threads(threads)
