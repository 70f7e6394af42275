"""CPU speed of small timm backbones (random weights, built locally), for the default model choice.

Prints, per model: parameters, inference and training (forward + backward + AdamW step)
milliseconds per image at the default tag's input size (224 px; 176 for resnet10t) on ``--threads`` CPU threads,
the published ImageNet-1k top-1 of the default pretrained tag (timm's
``results/results-imagenet.csv``, copied below with its source) and the weights' licence
(from timm's pretrained config). Nothing is downloaded.

    .venv/bin/python benchmarks/backbones_cpu.py [--threads 2] [--batch 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

#: ImageNet-1k validation top-1 (%) of the default tag at its pretrained input size (the row
#: of that size), from timm's results/results-imagenet.csv (huggingface/pytorch-image-models,
#: commit aa4b5850, August 2026).
PUBLISHED_TOP1 = {
    "resnet10t.c3_in1k": 66.724,  # 176 px
    "resnet18.a1_in1k": 71.504,
    "mobilenetv3_large_100.ra_in1k": 75.784,
    "efficientnet_b0.ra_in1k": 77.698,
    "convnext_atto.d2_in1k": 75.672,
}
MODELS = ("resnet10t", "resnet18", "mobilenetv3_large_100", "efficientnet_b0", "convnext_atto")


def measure(name: str, batch: int, rounds: int) -> dict:
    import timm
    import torch

    cfg = timm.models.get_pretrained_cfg(name)
    size = cfg.input_size[-1]
    model = timm.create_model(name, pretrained=False, num_classes=2)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    model.eval()
    with torch.inference_mode():
        model(x)
        best_inf = min(_timed(lambda: model(x)) for _ in range(rounds))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    best_train = min(_timed(step) for _ in range(rounds))
    tag = f"{name}.{cfg.tag}"
    return {"model": tag, "params_m": params, "infer_ms": 1000 * best_inf / batch,
            "train_ms": 1000 * best_train / batch, "top1": PUBLISHED_TOP1.get(tag), "license": cfg.license,
            "native": size}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} threads, batch {args.batch}, pretrained input size, best of {args.rounds}; random weights")
    print(f"{'model (default tag)':34} {'px':>4} {'params M':>8} {'infer ms/img':>12} {'train ms/img':>12} {'top-1 %':>8}  licence")
    for name in args.models:
        r = measure(name, args.batch, args.rounds)
        top1 = f"{r['top1']:.2f}" if r["top1"] else "-"
        print(f"{r['model']:34} {r['native']:4d} {r['params_m']:8.1f} {r['infer_ms']:12.1f} {r['train_ms']:12.1f} "
              f"{top1:>8}  {r['license']}")


if __name__ == "__main__":
    main()
