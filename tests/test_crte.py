"""CRTE against values worked out by hand, for both branches."""

import math

import numpy as np
import pytest

from vinci_edge import crte
from vinci_edge.config import TimeEmbedding


def mtct(dim=8, max_time=100.0, mode="shortest"):
    return TimeEmbedding(branch="mtct", dim=dim, max_time=max_time, period_mode=mode)


def test_shortest_frequencies():
    w = crte.mtct_frequencies(8, 100.0, "shortest")
    # w_i = 2 pi / (max_time * 5 ** (i / 4)): the fastest turns exactly once over max_time
    assert w == pytest.approx([2 * math.pi / (100 * 5 ** (i / 4)) for i in range(4)], rel=1e-15)
    assert 2 * math.pi / w[0] == pytest.approx(100.0)


def test_longest_frequencies_span_one_second_to_max_time():
    w = crte.mtct_frequencies(8, 100.0, "longest")
    theta = 100.0 ** (4 / 3)
    assert w == pytest.approx([2 * math.pi / theta ** (i / 4) for i in range(4)], rel=1e-15)
    periods = 2 * math.pi / w
    assert periods[0] == pytest.approx(1.0)  # fastest: 1 s
    assert periods[-1] == pytest.approx(theta**0.75)  # = max_time ** (4/3 * 3/4) = 100 s
    assert periods[-1] == pytest.approx(100.0)


def test_mtct_rotation_by_hand_frequencies_not_repeated_per_pair():
    te = mtct()
    table = crte.rotation_table(te)
    assert table.rot_dim == 4  # only dim/2 channels rotate
    t = 25.0
    x = np.arange(1.0, 11.0)[None]  # D = 10
    scale, a, b = crte.token_coordinates(te, np.array([t]), np.zeros(1), 1, np.zeros(1), 1)
    out = crte.apply_rotation(x, table, scale, a, b)[0]
    w = [2 * math.pi / (100 * 5 ** (i / 4)) for i in range(4)]
    a0, a1, a2, a3 = (wi * t for wi in w)
    assert a0 == pytest.approx(math.pi / 2)
    # pair (x0, x1) = (1, 2): channel 0 turns at w0, channel 1 at w1 (different rates)
    expect = [
        1 * math.cos(a0) - 2 * math.sin(a0),  # = -2
        2 * math.cos(a1) + 1 * math.sin(a1),
        3 * math.cos(a2) - 4 * math.sin(a2),
        4 * math.cos(a3) + 3 * math.sin(a3),
    ]
    assert out[:4] == pytest.approx(expect, abs=1e-12)
    assert out[0] == pytest.approx(-2.0, abs=1e-12)
    assert out[4:] == pytest.approx(x[0, 4:])  # untouched


def test_time_zero_is_identity_and_large_times_keep_precision():
    te = mtct(dim=16, max_time=3600.0)
    table = crte.rotation_table(te)
    x = np.random.default_rng(0).standard_normal((3, 32))
    t = np.array([0.0, 3599.9, 1e6])
    out = crte.apply_rotation(x, table, *crte.token_coordinates(te, t, t, 1, t, 1))
    assert out[0] == pytest.approx(x[0], abs=0)
    # angles are formed in float64 from float64 times: no float32 rounding at large t
    ang = crte.rotation_angles(table, *crte.token_coordinates(te, t, t, 1, t, 1))
    assert ang[2, 0] == 2 * math.pi / 3600.0 * 1e6


def test_axial_pixel_video_by_hand():
    # video encoder, 'pixel' table without max_time, period_fix False: scale = -2 pi t
    te = TimeEmbedding(
        branch="axial", dim=4, max_time=None, freqs_for="pixel", period_fix="False", max_freq=256.0
    )
    table = crte.rotation_table(te)
    f = [math.pi, math.pi, 128 * math.pi, 128 * math.pi]  # linspace(1, 128, 2) * pi, repeated per pair
    assert table.freqs_a == pytest.approx(f) and table.freqs_b == pytest.approx(f)
    assert table.rot_dim == 8
    # frame 1 of 2 (row position +1), token 0 of 3 (column position -1), at t = 0.5 s
    scale, a, b = crte.token_coordinates(te, np.array([0.5]), np.array([1]), 2, np.array([0]), 3)
    assert (scale[0], a[0], b[0]) == pytest.approx((-math.pi, 1.0, -1.0))
    ang = crte.rotation_angles(table, scale, a, b)[0]
    assert ang == pytest.approx([-math.pi * fi for fi in f] + [math.pi * fi for fi in f])


def test_axial_lang_with_max_time_by_hand():
    # sound encoder, 'lang' table with max_time 10: theta = 10 / (2 pi), positions scaled by 2 pi / 10;
    # period_fix "True": angle scale = t / 10 * 2 pi
    te = TimeEmbedding(
        branch="axial", dim=4, max_time=10.0, freqs_for="lang", period_fix="True", angle_max_time=10.0
    )
    table = crte.rotation_table(te)
    theta = 10 / (2 * math.pi)
    base = [1.0, 1 / theta ** (2 / 4)]
    assert table.freqs_a == pytest.approx([base[0], base[0], base[1], base[1]])
    t = np.array([2.5])
    scale, a, b = crte.token_coordinates(te, t, np.array([0]), 1, np.array([3]), 5)
    assert scale[0] == pytest.approx(2.5 / 10 * 2 * math.pi)
    assert a[0] == 0.0 and b[0] == pytest.approx(3 / 10 * 2 * math.pi)
    x = np.ones((1, 8))
    out = crte.apply_rotation(x, table, scale, a, b)[0]
    ang_b = scale[0] * b[0] * np.array(table.freqs_b)
    # the row axis has position 0: no rotation on the first 4 channels
    assert out[:4] == pytest.approx([1, 1, 1, 1])
    assert out[4] == pytest.approx(math.cos(ang_b[0]) - math.sin(ang_b[0]))
    assert out[5] == pytest.approx(math.cos(ang_b[1]) + math.sin(ang_b[1]))


def test_dtype_round_trip_and_errors():
    te = mtct()
    table = crte.rotation_table(te)
    x = np.ones((2, 6), np.float16)
    out = crte.apply_rotation(x, table, np.ones(2), np.ones(2), np.zeros(2))
    assert out.dtype == np.float16
    with pytest.raises(ValueError, match="wide"):
        crte.apply_rotation(np.ones((1, 2)), table, np.ones(1), np.ones(1), np.zeros(1))
    empty = crte.apply_rotation(np.zeros((0, 6)), table, np.ones(0), np.ones(0), np.zeros(0))
    assert empty.shape == (0, 6)
