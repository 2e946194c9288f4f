"""hashbench.models: the one majority-code rule every anchor code is computed with."""

from __future__ import annotations

import torch

from hashbench import majority_code


def test_majority_code_votes_per_bit_with_ties_plus_one():
    codes = torch.tensor([[1.0, 1, -1, -1], [1, -1, -1, 1], [-1, 1, -1, -1], [1, -1, 1, 1]])
    # column sums 2, 0 (a tie: +1, as sign maps 0), -2 and 0 (a tie: +1)
    assert majority_code(codes).tolist() == [1, 1, -1, 1]


def test_majority_code_of_real_outputs_votes_with_their_signs_not_their_sizes():
    outputs = torch.tensor([[5.0, -0.1], [-0.5, 0.2], [-0.5, 0.0]])  # 0.0 counts as +1, like sign_codes
    assert majority_code(outputs).tolist() == [-1, 1]
