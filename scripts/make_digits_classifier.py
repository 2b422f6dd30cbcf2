"""Train the small digits classifier whose features the digits metrics use.

    python scripts/make_digits_classifier.py            # writes pyro_dgm/assets/digits_classifier.pt

The classifier (:class:`pyro_dgm.metrics.DigitsClassifier`) is trained on the
digits *train* split only (``pyro_dgm.data.DIGITS_SPLIT``, seed 0), on both
representations models are fitted to: uniformly dequantized levels in [0, 1)
(fresh noise every epoch) and the binarized images. The test split is only
used to print the accuracy. Same seed, same weights (CPU, one thread).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.nn import functional as F

from pyro_dgm.data import DIGITS_LEVELS, DIGITS_SPLIT, binarize, dequantize, load_digits, split_indices
from pyro_dgm.metrics import DIGITS_CLASSIFIER_PATH, DigitsClassifier


def labels(split: str) -> torch.Tensor:
    from sklearn.datasets import load_digits as sk_digits

    y = torch.as_tensor(sk_digits().target)
    return y[split_indices(y.shape[0], split, 0, DIGITS_SPLIT)]


def inputs(levels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half the images dequantized to [0, 1), half binarized at level 8."""
    x = dequantize(levels, DIGITS_LEVELS, generator=generator)
    use_binary = torch.rand(levels.shape[0], 1, generator=generator) < 0.5
    return torch.where(use_binary, binarize(levels, 8.0), x)


def train(seed: int = 0, epochs: int = 150, batch_size: int = 64, lr: float = 1e-3) -> DigitsClassifier:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    levels, y = load_digits("train", "levels"), labels("train")
    net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        x = inputs(levels, g)
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def accuracy(net: DigitsClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(-1) == y).float().mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--out", default=str(DIGITS_CLASSIFIER_PATH))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    net = train(args.seed, args.epochs)
    y_test = labels("test")
    for kind in ("continuous", "binary"):
        print(f"test accuracy ({kind}): {accuracy(net, load_digits('test', kind), y_test):.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
