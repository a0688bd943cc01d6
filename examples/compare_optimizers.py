"""Train one small MLP with each of optimlab's optimizers and print the losses.

    python examples/compare_optimizers.py

Synthetic two-moons-like data, generated here; no downloads.
"""

import torch

import optimlab


def data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=gen) * torch.pi
    label = torch.randint(0, 2, (n,), generator=gen)
    x = torch.stack([torch.cos(angle) + label, torch.sin(angle) * (1 - 2 * label) + 0.5 * label], 1)
    return x + 0.1 * torch.randn(n, 2, generator=gen), label


OPTIMIZERS = {
    "SGD": lambda p: optimlab.SGD(p, lr=0.1),
    "SGD+momentum": lambda p: optimlab.SGD(p, lr=0.1, momentum=0.9),
    "SGD+Nesterov": lambda p: optimlab.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "Adagrad": lambda p: optimlab.Adagrad(p, lr=0.1),
    "RMSprop": lambda p: optimlab.RMSprop(p, lr=0.01),
    "Adam": lambda p: optimlab.Adam(p, lr=0.01),
    "Adam (no bias corr.)": lambda p: optimlab.Adam(p, lr=0.01, bias_correction=False),
    "AdamW": lambda p: optimlab.AdamW(p, lr=0.01),
    "NAdam": lambda p: optimlab.NAdam(p, lr=0.01),
}


def train(make_optimizer, steps: int = 300, batch: int = 64) -> list[float]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))
    optimizer = make_optimizer(model.parameters())
    x, y = data()
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)  # a mini-batch
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


if __name__ == "__main__":
    print(f"{'optimizer':22s} {'step 1':>8s} {'step 50':>8s} {'step 300':>8s}")
    for name, make in OPTIMIZERS.items():
        losses = train(make)
        print(f"{name:22s} {losses[0]:8.4f} {losses[49]:8.4f} {losses[-1]:8.4f}")
