"""Sequence stages over the width axis: (B, T, C_in) -> (B, T, C_out)."""

from __future__ import annotations

from torch import nn


class BiRNNBlock(nn.Module):
    """One bidirectional LSTM/GRU followed by a linear projection of the two directions (DTRB's
    BidirectionalLSTM)."""

    def __init__(self, cin: int, hidden: int, cout: int, rnn: type[nn.RNNBase] = nn.LSTM):
        super().__init__()
        self.rnn = rnn(cin, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, cout)

    def forward(self, x):
        self.rnn.flatten_parameters()
        y, _ = self.rnn(x)  # (B, T, C_in) -> (B, T, 2*hidden)
        return self.proj(y)  # (B, T, 2*hidden) -> (B, T, cout)


class BiLSTM(nn.Sequential):
    """Stacked bidirectional LSTMs, each projected back to `hidden` (CRNN, DTRB)."""

    rnn: type[nn.RNNBase] = nn.LSTM

    def __init__(self, cin: int, hidden: int, layers: int):
        super().__init__(*[BiRNNBlock(cin if i == 0 else hidden, hidden, hidden, self.rnn) for i in range(layers)])
        self.out_channels = hidden


class BiGRU(BiLSTM):
    """Stacked bidirectional GRUs, each projected back to `hidden`."""

    rnn = nn.GRU


class NoSequence(nn.Identity):
    """No sequence modelling: the head reads the backbone's columns directly."""

    def __init__(self, cin: int, hidden: int, layers: int):
        super().__init__()
        self.out_channels = cin


SEQUENCES = {"bilstm": BiLSTM, "gru": BiGRU, "none": NoSequence}
