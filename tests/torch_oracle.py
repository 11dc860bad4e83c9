"""Run PyTorch's nn.RNN/GRU/LSTM on the same inputs, the independent oracle for rnnlab's layers."""

from __future__ import annotations

import numpy as np
import torch

TORCH_CLASS = {"elman": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}


def build(kind: str, k: int, p: int, layers: int, bidirectional: bool, nonlinearity: str = "tanh",
          seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=True)
    if kind == "elman":
        kw["nonlinearity"] = nonlinearity
    return TORCH_CLASS[kind](k, p, **kw)


def run(module: torch.nn.Module, x: np.ndarray, lengths: np.ndarray, x_requires_grad: bool = False):
    """(outputs (B, T, D·p), h_n (layers·D, B, p), c_n or None, x tensor) for a padded batch."""
    xt = torch.from_numpy(x).requires_grad_(x_requires_grad)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        xt, torch.from_numpy(lengths.astype(np.int64)), batch_first=True, enforce_sorted=False)
    out, state = module(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    return out, h_n, c_n, xt
