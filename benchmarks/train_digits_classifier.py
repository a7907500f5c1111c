"""Train the digits classifier whose features FID/KID/IS of the digits use, and write the shipped
weights `sde_app/weights/digits_classifier.pt` (`sde_app.features.train_digits_classifier`).

    python benchmarks/train_digits_classifier.py [--seed 0] [--epochs 60] [--out PATH]

Deterministic on the CPU for a seed; prints the test accuracy (297 held-out digits).
"""
import argparse
import time

import torch

from sde_app.features import DIGITS_CLASSIFIER_WEIGHTS, save_digits_classifier, train_digits_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(DIGITS_CLASSIFIER_WEIGHTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    net, info = train_digits_classifier(seed=args.seed, epochs=args.epochs, progress=True)
    path = save_digits_classifier(net, info, args.out)
    print(f"test accuracy {info['test_accuracy']:.4f}, train accuracy {info['train_accuracy']:.4f},"
          f" {time.perf_counter() - start:.0f} s -> {path}")


if __name__ == "__main__":
    main()
