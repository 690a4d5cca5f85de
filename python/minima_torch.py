"""PyTorch equivalents of minima's models, for loading its safetensors.

minima writes trained weights under the names of these modules' state_dict,
so a PyTorch user can continue the analysis of a trained model:

    from safetensors.torch import load_file
    from minima_torch import build
    net = build("transformer", layers=6, hidden=16, heads=2)
    net.load_state_dict(load_file("results/table1/tasks/<task>/weights_final.safetensors"))

The modules follow the study's description: stacked LSTM/GRU layers (dropout
between layers) and Linear(d, 1) on the last step; or Linear(1, d), a
sinusoidal positional encoding, post-norm encoder layers (2d feed-forward,
ReLU), a final LayerNorm and Linear(d, 1) on the last position.
"""
import math

import torch
import torch.nn as nn


class Recurrent(nn.Module):
    def __init__(self, cell, layers, hidden, dropout=0.1):
        super().__init__()
        self.rnn = cell(1, hidden, layers, batch_first=True,
                        dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.out(h[:, -1])


class Sinusoidal(nn.Module):
    def __init__(self, d, length=5):
        super().__init__()
        pe = torch.zeros(length, d)
        pos = torch.arange(length).unsqueeze(1)
        div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
        self.register_buffer("pe", pe)

    def forward(self, x):
        return x + self.pe


class Encoder(nn.Module):
    def __init__(self, layers, heads, d, dropout=0.1, length=5):
        super().__init__()
        self.inp = nn.Linear(1, d)
        self.pos = Sinusoidal(d, length)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d),
                                         enable_nested_tensor=False)
        self.out = nn.Linear(d, 1)

    def forward(self, x):
        return self.out(self.enc(self.pos(self.inp(x)))[:, -1])


def build(arch, layers, hidden, heads=None, dropout=0.1, length=5):
    """The model minima calls `arch` ("lstm", "gru" or "transformer")."""
    if arch == "lstm":
        return Recurrent(nn.LSTM, layers, hidden, dropout)
    if arch == "gru":
        return Recurrent(nn.GRU, layers, hidden, dropout)
    if arch == "transformer":
        return Encoder(layers, heads, hidden, dropout, length)
    raise ValueError(f"unknown architecture {arch!r}")
