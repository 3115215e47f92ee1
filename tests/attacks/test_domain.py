"""Where a poison may go (`attacks/domain.py`), by hand: the box each kind of data gets, the
clamp without a ball, and how far each poison moved."""

from __future__ import annotations

import numpy as np
import torch

from subpop_runner.attacks.domain import InputDomain, distances
from subpop_runner.data.images import PIXEL_RANGE
from subpop_runner.types import Part, Splits


def test_distances_are_each_poisons_l2_and_linf_move_from_its_start():
    poison = np.array([[3.0, 4.0], [1.0, 1.0], [0.0, -2.0]], np.float32)
    start = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]], np.float32)
    l2, linf = distances(poison, start)
    assert l2.tolist() == [5.0, 0.0, 2.0] and linf.tolist() == [4.0, 0.0, 2.0]
    images = np.zeros((2, 1, 2, 2), np.float32)
    moved = images.copy()
    moved[1, 0, 1, 1] = -0.5
    l2, linf = distances(moved, images)
    assert l2.tolist() == [0.0, 0.5] and linf.tolist() == [0.0, 0.5]
    empty = distances(np.zeros((0, 2)), np.zeros((0, 2)))
    assert [d.shape for d in empty] == [(0,), (0,)]


def test_images_get_the_pixel_range_and_a_ball_tables_their_aux_range_and_groups():
    images = Part(np.zeros((3, 1, 2, 2), np.float32), np.zeros(3, np.int64))
    domain = InputDomain.of(Splits(images, images, images, ("a", "b")), epsilon=0.1)
    assert domain.low.shape == (1, 2, 2) and (domain.low == PIXEL_RANGE[0]).all()
    assert (domain.high == PIXEL_RANGE[1]).all()
    assert domain.radius == 0.1 and domain.one_hot == ()
    x = np.array([[0.0, -1.0, 1.0, 0.0], [2.0, 3.0, 0.0, 1.0]], np.float32)
    aux = Part(x, np.array([0, 1]))
    other = Part(100 * x, np.array([0, 1]))  # training and test rows do not count
    table = Splits(other, aux, other, ("a", "b"), one_hot=((2, 3),))
    domain = InputDomain.of(table, epsilon=0.1)
    assert domain.low.tolist() == [0.0, -1.0, 0.0, 0.0]
    assert domain.high.tolist() == [2.0, 3.0, 1.0, 1.0]
    assert domain.one_hot == ((2, 3),) and domain.radius is None


def test_without_a_ball_the_clamp_is_the_box_alone():
    box = InputDomain(torch.zeros(3), torch.ones(3))
    start = torch.full((1, 3), 0.5)
    assert box.clamp(torch.tensor([[-1.0, 0.25, 2.0]]), start).tolist() == [[0.0, 0.25, 1.0]]
