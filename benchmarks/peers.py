"""The PyTorch peer of rnnlab's default classifier, one definition for every benchmark that trains it.

E (V, k) -> a bidirectional `torch.nn.GRU` of `units` a direction over packed sequences -> max-pooling
over the valid steps -> dropout 0.3 -> a linear head over C classes: rnnlab's defaults, in PyTorch.
"""

from __future__ import annotations


def torch_bigru(E, units: int, C: int):
    """The peer, E (V, k) float32 NumPy as its fine-tuned embedding (row 0 the padding)."""
    import torch
    from torch import nn

    class Peer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding.from_pretrained(torch.from_numpy(E), freeze=False, padding_idx=0)
            self.gru = nn.GRU(E.shape[1], units, batch_first=True, bidirectional=True)
            self.dropout = nn.Dropout(0.3)
            self.head = nn.Linear(2 * units, C)

        def forward(self, ids, lengths):
            x = self.embedding(ids)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            a, _ = self.gru(packed)
            a, _ = nn.utils.rnn.pad_packed_sequence(a, batch_first=True, padding_value=-1e9)
            return self.head(self.dropout(a.max(dim=1).values))

    return Peer()
