#!/usr/bin/env python3
"""A sweep's jobs run one after another in PyTorch: the baseline `ndhtl run` is timed against.

Reads the jobs `ndhtl plan SWEEP --export-jobs jobs.jsonl` writes (source training, then STL and
NDHTL fine-tunes, with their configurations and class labels) and the CIFAR binary files under
--data, and runs each job in order with the same model, loop and amount of work as ndhtl: the
source model for its epochs at its batch size and step schedule, then each fine-tune for its
lifetimes at batch 1 (STL: one SGD step per image; NDHTL: the plastic head of spec §3, one
backward pass per K images), evaluating on the task's test images after every lifetime.

Prints one JSON object: wall time in all and per job, and each job's final top-1. It measures
time, not fidelity: augmentation and details of initialisation follow ndhtl's in kind, not bit
for bit.

  python3 agent/bench/pytorch_sweep.py --jobs jobs.jsonl --data DATA --threads 2
  python3 agent/bench/pytorch_sweep.py --jobs jobs.jsonl --data DATA --device cuda:0
"""
import argparse
import copy
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from pytorch_reference import AlexNet

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
# Where models and data live (--device); the images of a task are moved there once.
DEVICE = torch.device("cpu")


def read_records(path, label_bytes):
    with open(path, "rb") as file:
        raw = torch.frombuffer(bytearray(file.read()), dtype=torch.uint8)
    records = raw.reshape(-1, label_bytes + 3072)
    return records[:, label_bytes - 1].long(), records[:, label_bytes:].reshape(-1, 3, 32, 32)


def load(data, dataset, split):
    if dataset == "cifar10":
        folder = os.path.join(data, "cifar-10-batches-bin")
        names = sorted(n for n in os.listdir(folder) if n.startswith("data_batch")) if split == "train" else ["test_batch.bin"]
        parts = [read_records(os.path.join(folder, n), 1) for n in names]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    folder = os.path.join(data, "cifar-100-binary")
    return read_records(os.path.join(folder, f"{split}.bin"), 2)


def task_tensors(data, dataset, classes, split, per_class=None):
    labels, pixels = load(data, dataset, split)
    remap = {c: i for i, c in enumerate(classes)}
    keep, taken = [], {c: 0 for c in classes}
    for index, label in enumerate(labels.tolist()):
        if label in remap and (per_class is None or taken[label] < per_class):
            taken[label] += 1
            keep.append(index)
    x = (pixels[keep].float() / 255.0 - MEAN) / STD
    y = torch.tensor([remap[labels[i].item()] for i in keep])
    return x.to(DEVICE), y.to(DEVICE)


def augment(x):
    """Random crop with 4 pixels of zero padding and a horizontal flip, per image."""
    padded = F.pad(x, (4, 4, 4, 4))
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        dx, dy = torch.randint(0, 9, (2,)).tolist()
        image = padded[i, :, dy:dy + 32, dx:dx + 32]
        out[i] = image.flip(2) if torch.rand(()) < 0.5 else image
    return out


def evaluate(forward, x, y, batch):
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), batch):
            correct += (forward(x[start:start + batch]).argmax(1) == y[start:start + batch]).sum().item()
    return 100.0 * correct / max(1, len(y))


class PlasticHead(nn.Module):
    """Spec §3, (P1)-(P7): shared trace, scalar modulator, softmax post-activity, retroactive rule."""

    def __init__(self, features, classes, eta, clip):
        super().__init__()
        self.classifier = nn.Linear(features, classes)
        self.alpha = nn.Parameter(0.01 * torch.rand(features, classes))
        self.eta = nn.Parameter(torch.tensor([eta]))
        self.modulator = nn.Linear(classes, 1)
        self.clip = clip

    def forward(self, x, hebb, elig):
        z = self.classifier.bias + x @ (self.classifier.weight.t() + self.alpha * hebb)
        y = F.softmax(z, dim=1)
        m = torch.tanh(self.modulator(y)).mean()
        hebb = torch.clamp(hebb + m * elig, -self.clip, self.clip)
        elig = (1 - self.eta) * elig + self.eta * (x.t() @ y / x.shape[0])
        return z, hebb, elig


def run_source(job, data):
    c = job["config"]
    x, y = task_tensors(data, job["dataset"], job["classes"], "train", c.get("train_per_class"))
    tx, ty = task_tensors(data, job["dataset"], job["classes"], "test")
    model = AlexNet(len(job["classes"])).to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
    milestones = [round(m * c["epochs"]) for m in c["lr_milestones"]]
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=c["lr_gamma"])
    for _ in range(c["epochs"]):
        model.train()
        order = torch.randperm(len(y))
        for start in range(0, len(y), c["batch_size"]):
            index = order[start:start + c["batch_size"]]
            batch = augment(x[index]) if c["augment"] else x[index]
            loss = F.cross_entropy(model(batch), y[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        schedule.step()
        model.eval()
        top1 = evaluate(model, tx, ty, c["eval_batch_size"])
    return model, top1


def run_finetune(job, data, source):
    c = job["config"]
    classes = len(job["classes"])
    x, y = task_tensors(data, job["dataset"], job["classes"], "train", c.get("train_per_class"))
    tx, ty = task_tensors(data, job["dataset"], job["classes"], "test")
    features = copy.deepcopy(source.features)
    ndhtl = c["method"] == "ndhtl"
    if ndhtl:
        head = PlasticHead(256, classes, c["eta"], c["plastic"]["clip"]).to(DEVICE)
        plastic = [head.alpha, head.eta] + list(head.modulator.parameters())
        groups = [{"params": list(features.parameters()) + list(head.classifier.parameters()),
                   "weight_decay": c["weight_decay"]},
                  {"params": plastic, "weight_decay": 0.0}]
    else:
        head = nn.Linear(256, classes).to(DEVICE)
        groups = [{"params": list(features.parameters()) + list(head.parameters()),
                   "weight_decay": c["weight_decay"]}]
    opt = torch.optim.SGD(groups, lr=c["lr"], momentum=c["momentum"])
    zeros = lambda: (torch.zeros(256, classes, device=DEVICE), torch.zeros(256, classes, device=DEVICE))
    hebb, elig = zeros()

    def forward_eval(images):
        feats = torch.flatten(features(images), 1)
        if ndhtl:
            return head(feats, hebb, elig)[0]
        return head(feats)

    top1 = 0.0
    for _ in range(c["lifetimes"]):
        features.train()
        order = torch.randperm(len(y))
        window, total = 0, 0
        for index in order:
            image = x[index:index + 1]
            image = augment(image) if c["augment"] else image
            feats = torch.flatten(features(image), 1)
            if ndhtl:
                z, hebb, elig = head(feats, hebb, elig)
                total = total + F.cross_entropy(z, y[index:index + 1])
                window += 1
                if window == c["k"]:
                    opt.zero_grad(set_to_none=True)
                    total.backward()
                    opt.step()
                    hebb, elig, window, total = hebb.detach(), elig.detach(), 0, 0
            else:
                loss = F.cross_entropy(head(feats), y[index:index + 1])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if ndhtl and window > 0:
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            hebb, elig = hebb.detach(), elig.detach()
        features.eval()
        top1 = evaluate(forward_eval, tx, ty, c["eval_batch_size"])
    return top1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    jobs = [json.loads(line) for line in open(args.jobs) if line.strip()]
    sources, results = {}, []
    start = time.perf_counter()
    for job in sorted(jobs, key=lambda j: j["kind"] != "source"):
        began = time.perf_counter()
        if job["kind"] == "source":
            sources[job["job_id"]], top1 = run_source(job, args.data)
        else:
            top1 = run_finetune(job, args.data, sources[job["depends_on"]])
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)
        results.append({"job_id": job["job_id"], "kind": job["kind"],
                        "task": job["config"].get("task"), "method": job["config"].get("method"),
                        "seconds": time.perf_counter() - began, "final_top1": top1})
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "device": str(DEVICE),
                      "jobs": len(results), "wall_seconds": time.perf_counter() - start,
                      "results": results}))


if __name__ == "__main__":
    main()
