"""CRTE in torch float64: the reference model's rotation, shared by `OmniVinciModel.stitch` and the
torch custom op's fallback (`crte_op`), so neither imports the other. See `vinci_edge.crte` for the
formula; this is the same arithmetic on tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from vinci_edge import crte


def rotate(
    x: torch.Tensor, table: crte.RotationTable, scale: np.ndarray, a: np.ndarray, b: np.ndarray
) -> torch.Tensor:
    """CRTE in torch float64 (see `vinci_edge.crte` for the formula)."""
    ang_a = torch.from_numpy(scale * a)[:, None] * torch.from_numpy(table.freqs_a)[None]
    if table.freqs_b.size:
        ang_b = torch.from_numpy(scale * b)[:, None] * torch.from_numpy(table.freqs_b)[None]
        ang = torch.cat([ang_a, ang_b], dim=1)
    else:
        ang = ang_a
    return rotate_by_angles(x, ang)


def rotate_by_angles(x: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """Rotate the first ang.shape[1] channels of x in adjacent pairs by `ang` (rows x channels, the
    angle repeated for both channels of a pair); the rest pass through."""
    rot = ang.shape[1]
    head = x[:, :rot]
    pairs = head.reshape(head.shape[0], -1, 2)
    half = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).reshape(head.shape)
    return torch.cat([head * ang.cos() + half * ang.sin(), x[:, rot:]], dim=1)
