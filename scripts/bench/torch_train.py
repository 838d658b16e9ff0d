"""PyTorch's CPU training rate on fc7's networks, the same shapes as `fc7bench train-step`:
conv (groups) → ReLU → LRN (conv1, conv2) → overlapping 3×3/2 max-pool (after conv1, conv2,
conv5), fc6 → ReLU → dropout 0.5, fc7 → ReLU → dropout 0.5, fc8, softmax cross-entropy, SGD
with momentum 0.9 and weight decay 5e-4 (the paper's update as torch.optim.SGD writes it).
Usage: python3 scripts/bench/torch_train.py PRESET BATCH ITERS THREADS CLASSES"""
import sys, time
import torch
import torch.nn as nn

preset, batch, iters, threads, classes = sys.argv[1], *map(int, sys.argv[2:6])
torch.set_num_threads(threads)
torch.manual_seed(0)
if preset == "quick":
    side, convs = 63, [(32, 11, 4, 2, 1), (64, 5, 1, 2, 2), (96, 3, 1, 1, 1), (96, 3, 1, 1, 2), (64, 3, 1, 1, 2)]
else:
    side, convs = 224, [(96, 11, 4, 2, 1), (256, 5, 1, 2, 2), (384, 3, 1, 1, 1), (384, 3, 1, 1, 2), (256, 3, 1, 1, 2)]
layers, cin = [], 3
for i, (out, k, s, p, g) in enumerate(convs):
    layers += [nn.Conv2d(cin, out, k, s, p, groups=g), nn.ReLU(inplace=True)]
    if i < 2:
        # torch divides alpha by size; fc7's Lrn::PAPER is alpha 1e-4 on the sum.
        layers.append(nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0))
    if i in (0, 1, 4):
        layers.append(nn.MaxPool2d(3, 2))
    cin = out
features = nn.Sequential(*layers)
flat = features(torch.zeros(1, 3, side, side)).numel()
net = nn.Sequential(features, nn.Flatten(),
                    nn.Linear(flat, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                    nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                    nn.Linear(4096, classes))
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
x = torch.randn(batch, 3, side, side)
y = torch.randint(0, classes, (batch,))
loss_fn = nn.CrossEntropyLoss()


def steps(n):
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    return loss.item()


steps(2)
t = time.perf_counter()
steps(iters)
secs = time.perf_counter() - t
print(f"torch-train-step preset={preset} input={side} batch={batch} iters={iters} "
      f"torch={torch.__version__} isa={torch.backends.cpu.get_cpu_capability()} threads={threads} images/s={batch * iters / secs:.1f}")
