"""Trains one model in PyTorch with minima's protocol, on data minima wrote.

A side-by-side check of the training protocol: write a task's data with
`worker run ... --write-data --out DIR`, then

    python3 python/train_torch.py --data DIR/data --arch lstm --layers 1 --hidden 8

prints the per-epoch losses and the final test loss of PyTorch's own
training (AdamW lr 1e-3, weight decay 0.01, batch 10, global gradient-norm
clipping 0.25, dropout 0.1, shuffled batches).
"""
import argparse

import numpy as np
import torch

from minima_torch import build


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--heads", type=int)
    p.add_argument("--task", default="sequence-classification")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda:N")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    load = lambda name: torch.from_numpy(np.load(f"{args.data}/{name}.npy")).to(device)
    xs, ys = load("x_train"), load("y_train")
    xv, yv = load("x_validation"), load("y_validation")
    xt, yt = load("x_test"), load("y_test")
    classify = args.task == "sequence-classification"
    epochs = args.epochs or (10 if classify else 50)
    loss_fn = torch.nn.BCEWithLogitsLoss() if classify else torch.nn.MSELoss()
    net = build(args.arch, args.layers, args.hidden, args.heads).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(xs), device=device)
        total = 0.0
        for i in range(0, len(xs), 10):
            idx = order[i:i + 10]
            opt.zero_grad()
            loss = loss_fn(net(xs[idx]), ys[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.25)
            opt.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            val = loss_fn(net(xv), yv).item()
        print(f"epoch {epoch:3d}  train loss {total / len(xs):.6f}  validation loss {val:.6f}")
    with torch.no_grad():
        test = loss_fn(net(xt), yt).item()
    print(f"test loss {test:.6f}")


if __name__ == "__main__":
    main()
