"""The PyTorch baseline of scripts/bench.sh: the same networks, data, batch, optimizer and thread
count as dptrain, timed over training steps only (the data set is normalised once beforehand,
which favours PyTorch slightly). Prints "name value" lines.

usage: bench_torch.py DATA.h5 {mlp|cnn} THREADS STEPS [BLAS_THREADS]

THREADS sizes PyTorch's own (intra-op) pool and, unless BLAS_THREADS is given, OpenBLAS's.
With 2 cores, 2 and 2 fight (measured: MLP 22,600 samples/s, against 61,300 with 1 and 2), so
scripts/bench.sh runs both splits of 2 threads and keeps PyTorch's faster one.
"""
import os
import sys
import time

# PyTorch's float32 GEMMs go to the system OpenBLAS, which ignores torch.set_num_threads(): both
# pools are sized here, before torch is imported, so that "1 thread" means one core for PyTorch
# as it does for dptrain (measured: without this, "1 thread" ran its GEMMs on 2 cores).
THREADS = sys.argv[3] if len(sys.argv) > 3 else "1"
BLAS_THREADS = sys.argv[5] if len(sys.argv) > 5 else THREADS
os.environ["OMP_NUM_THREADS"] = THREADS
os.environ["OPENBLAS_NUM_THREADS"] = BLAS_THREADS

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


def networks(kind):
    if kind == "mlp":  # dptrain's "mlp": 784-256-128-10, ReLU, dropout 0.1 after hidden layers
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.1),
                             nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
    # dptrain's "cnn" = cnn:32,p,64,p,f256: 3x3 convolutions without bias, batch norm, ReLU, 2x2 pooling
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 10))


def main():
    path, kind, threads, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    with h5py.File(path, "r") as f:
        images = f["train/images"][...].astype(np.float32) / 255.0
        labels = f["train/labels"][...].astype(np.int64)
    images = (images - images.mean()) / images.std()
    x = torch.from_numpy(images).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(labels)
    model = networks(kind)
    # dptrain's Adam: decoupled weight decay 1e-4 on weights, none on biases and batch-norm scales
    decayed = [p for n, p in model.named_parameters() if p.dim() > 1]
    others = [p for n, p in model.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": 1e-4},
                                   {"params": others, "weight_decay": 0.0}], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    batch = 128
    order = torch.randperm(len(y))
    model.train()

    def step(i):
        index = order[(i * batch) % (len(y) - batch):][:batch]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[index]), y[index])
        loss.backward()
        optimizer.step()

    for i in range(10):  # warm-up: allocator, kernels
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    seconds = time.perf_counter() - start
    print(f"torch_version {torch.__version__}")
    print(f"torch_{kind}_threads {threads}+{BLAS_THREADS}")
    print(f"torch_{kind}_samples_per_second {steps * batch / seconds:.0f}")


if __name__ == "__main__":
    main()
