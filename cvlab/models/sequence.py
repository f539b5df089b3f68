"""Sequence stages over the width axis: (B, T, C_in) -> (B, T, C_out)."""

from __future__ import annotations

from torch import nn


class BiLSTMBlock(nn.Module):
    """One bidirectional LSTM followed by a linear projection of the two directions (DTRB's BidirectionalLSTM)."""

    def __init__(self, cin: int, hidden: int, cout: int):
        super().__init__()
        self.rnn = nn.LSTM(cin, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, cout)

    def forward(self, x):
        self.rnn.flatten_parameters()
        y, _ = self.rnn(x)  # (B, T, 2*hidden)
        return self.proj(y)


class BiLSTM(nn.Sequential):
    def __init__(self, cin: int, hidden: int, layers: int):
        super().__init__(*[BiLSTMBlock(cin if i == 0 else hidden, hidden, hidden) for i in range(layers)])
        self.out_channels = hidden


class NoSequence(nn.Identity):
    def __init__(self, cin: int, hidden: int, layers: int):
        super().__init__()
        self.out_channels = cin


SEQUENCES = {"bilstm": BiLSTM, "none": NoSequence}
