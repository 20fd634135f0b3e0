"""OmniAlignNet: shapes, unit-length outputs, the symmetric contrastive loss, and that it trains."""

import math

import torch

from vinci_edge.model.align import OmniAlignNet, symmetric_contrastive_loss


def test_loss_is_symmetric_and_matches_hand_values():
    v = torch.eye(3)
    a = torch.eye(3)
    # s = I: each row's softmax gives e / (e + 2) to the right pair
    expect = -math.log(math.e / (math.e + 2))
    assert abs(symmetric_contrastive_loss(v, a).item() - expect) < 1e-6
    a2 = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.6, 0, 0.8]])
    assert torch.isclose(symmetric_contrastive_loss(v, a2), symmetric_contrastive_loss(a2, v))


def test_outputs_are_unit_vectors_and_padding_is_ignored():
    torch.manual_seed(0)
    net = OmniAlignNet(dim=32, heads=4).eval()
    vis = torch.randn(2, 7, 32)
    aud = torch.randn(2, 5, 32)
    v, a = net(vis, aud)
    assert v.shape == (2, 32) and a.shape == (2, 32)
    assert torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-5)
    # appending padded positions (masked) does not change the result
    pad = torch.zeros(2, 3, 32) + 100.0
    mask = torch.cat([torch.zeros(2, 7, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)], dim=1)
    v2, _ = net(torch.cat([vis, pad], dim=1), aud, vision_pad=mask)
    assert torch.allclose(v, v2, atol=1e-5)


def test_a_few_steps_align_paired_clips():
    torch.manual_seed(0)
    net = OmniAlignNet(dim=16, heads=2, layers=1, temperature=0.1)
    shared = torch.randn(8, 1, 16)  # each pair shares a latent "event"
    vis = shared + 0.1 * torch.randn(8, 6, 16)
    aud = shared + 0.1 * torch.randn(8, 4, 16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        v, a = net(vis, aud)
        loss = net.loss(v, a)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    # every clip's vision vector now retrieves its own audio vector
    with torch.no_grad():
        v, a = net(vis, aud)
    assert ((v @ a.t()).argmax(dim=1) == torch.arange(8)).all()
