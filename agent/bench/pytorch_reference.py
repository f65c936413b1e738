#!/usr/bin/env python3
"""The same model and loops as `ndhtl bench`, in PyTorch, for a side-by-side ratio.

Workloads (images per second, median of --repeats after a warm-up):
  train_b128          STL SGD step, batch 128
  train_b1_stl        STL SGD step, batch 1
  train_b1_ndhtl_k10  NDHTL plastic step per image, one backward every 10 images
  infer_b1000         inference, batch 1000

Every step takes its batch from host memory, as a training script's DataLoader hands it over:
pinned and copied with non_blocking=True on a GPU (DataLoader(pin_memory=True)); on the CPU the
copy is a no-op. ndhtl's side uploads every step's batch the same way.

Prints one JSON object. Run by `ndhtl bench` when `import torch` works; standalone:
  python3 agent/bench/pytorch_reference.py --threads 2 --device cpu
"""
import argparse
import ctypes
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class AlexNet(nn.Module):
    """bearpaw/pytorch-classification models/cifar/alexnet.py (spec §1)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=5), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Plastic(nn.Module):
    """The NDHTL head, equations (P1)-(P7), shared trace, scalar M, softmax post-activity."""

    def __init__(self, classifier, num_classes=10, eta=0.1, clip=0.5):
        super().__init__()
        self.classifier = classifier
        self.alpha = nn.Parameter(0.01 * torch.rand(256, num_classes))
        self.eta = nn.Parameter(torch.tensor([eta]))
        self.modulator = nn.Linear(num_classes, 1)
        self.clip = clip

    def forward(self, x, hebb, elig):
        w = self.classifier.weight.t()
        z = self.classifier.bias + x @ (w + self.alpha * hebb)
        y = F.softmax(z, dim=1)
        m = torch.tanh(self.modulator(y)).mean()
        q = x.t() @ y / x.shape[0]
        hebb = torch.clamp(hebb + m * elig, -self.clip, self.clip)
        elig = (1 - self.eta) * elig + self.eta * q
        return z, hebb, elig


class OpCensus:
    """Marks the timed steps for scripts/op-census.sh, whose preloaded libtorch hook
    (agent/bench/op_census/op_census.cpp) counts ATen operator calls between the marks, as
    ndhtl's side does. Without the hook (every ordinary run) the marks do nothing."""

    def __init__(self):
        process = ctypes.CDLL(None)
        self.begin_hook = getattr(process, "ndhtl_op_census_begin", None)
        self.end_hook = getattr(process, "ndhtl_op_census_end", None)

    def begin(self, workload):
        if self.begin_hook is not None:
            self.begin_hook(workload.encode())

    def end(self, steps):
        if self.end_hook is not None:
            self.end_hook(ctypes.c_longlong(steps))


CENSUS = OpCensus()


def timed(name, run, steps, repeats, warmup, sync):
    run(warmup)
    sync()
    samples = []
    for _ in range(repeats):
        CENSUS.begin(name)
        start = time.perf_counter()
        run(steps)
        sync()
        samples.append((time.perf_counter() - start) / steps)
        CENSUS.end(steps)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0)
    # torch.optim.SGD's own choice (None): the multi-tensor foreach kernels on CUDA, a loop
    # over the parameters on the CPU. scripts/op-census.sh asks for foreach on the CPU too, to
    # count the operator calls a GPU step makes.
    parser.add_argument("--foreach", action="store_true", default=None)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    steps = lambda base: max(1, round(base * args.scale))

    def host(tensor):
        """A host batch: pinned when the model runs on a GPU (DataLoader(pin_memory=True))."""
        return tensor.pin_memory() if device.type == "cuda" else tensor

    def upload(tensor):
        return tensor.to(device, non_blocking=True)
    torch.manual_seed(0)
    results = {}

    def stl(name, batch, base):
        model = AlexNet().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4,
                              foreach=args.foreach)
        x = host(torch.randn(batch, 3, 32, 32))
        y = host(torch.randint(0, 10, (batch,)))

        def run(n):
            for _ in range(n):
                loss = F.cross_entropy(model(upload(x)), upload(y))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return timed(name, run, steps(base), args.repeats, max(2, steps(base // 4)), sync)

    results["train_b128"] = 128 / stl("train_b128", 128, 8)
    results["train_b1_stl"] = 1 / stl("train_b1_stl", 1, 200)

    model = AlexNet().to(device)
    head = Plastic(model.classifier).to(device)
    params = list(model.features.parameters()) + list(model.classifier.parameters())
    plastic = [head.alpha, head.eta] + list(head.modulator.parameters())
    opt = torch.optim.SGD([{"params": params, "weight_decay": 5e-4},
                           {"params": plastic, "weight_decay": 0.0}], lr=1e-4, momentum=0.9,
                          foreach=args.foreach)
    batches = [(host(torch.randn(1, 3, 32, 32)), host(torch.randint(0, 10, (1,))))
               for _ in range(10)]
    state = [torch.zeros(256, 10, device=device), torch.zeros(256, 10, device=device)]

    def ndhtl(n):
        for _ in range(n):
            hebb, elig = state
            total = 0
            for x, y in batches:
                z, hebb, elig = head(torch.flatten(model.features(upload(x)), 1), hebb, elig)
                total = total + F.cross_entropy(z, upload(y))
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            state[0], state[1] = hebb.detach(), elig.detach()

    results["train_b1_ndhtl_k10"] = 10 / timed(
        "train_b1_ndhtl_k10", ndhtl, steps(20), args.repeats, 2, sync)

    model = AlexNet().to(device).eval()
    x = host(torch.randn(1000, 3, 32, 32))

    def infer(n):
        with torch.no_grad():
            for _ in range(n):
                model(upload(x)).argmax(1).cpu()

    results["infer_b1000"] = 1000 / timed("infer_b1000", infer, steps(4), args.repeats, 1, sync)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "device": str(device), "images_per_second": results}))


if __name__ == "__main__":
    main()
