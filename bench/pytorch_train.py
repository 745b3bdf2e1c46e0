"""PyTorch reference for gdp's one-replica training throughput (bench/run.ts, section `train`).

    python3 bench/pytorch_train.py ARCH [--batch 64] [--steps 5] [--threads 1]

ARCH is mnist.resnet20 (28x28x1 input) or cifar.resnet56 (32x32x3). The network mirrors
src/shared/models/resnet_cifar.ts: CIFAR ResNet (He et al. 2016, section 4.2) with 3 stages of BasicBlocks at
16/32/64 channels, bias-free 3x3 convolutions, option-B shortcuts (1x1 convolution + BatchNorm where the shape
changes), global average pooling and a linear classifier. A step is what gdp's bench times: forward, cross-entropy,
backward and an SGD update (momentum 0.9, weight decay 5e-4) on one fixed synthetic batch.

Prints one JSON line: {"arch", "torch", "threads", "batch", "img_s", "ms_per_step", "cpu_ms_per_step"}; img_s and
ms_per_step are wall time, cpu_ms_per_step the process cpu time, each the median over the steps (other processes
on the cores disturb single steps).
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = {
    # name: (depth, input channels, input size)
    'mnist.resnet20': (20, 1, 28),
    'cifar.resnet56': (56, 3, 32),
}


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        projection = stride != 1 or in_planes != planes
        self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)) if projection else nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth, in_channels, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, in_planes = [], 16
        for stage, planes in enumerate([16, 32, 64]):
            for b in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if b == 0 and stage > 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('arch', choices=sorted(ARCHS))
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(1)
    torch.set_num_threads(args.threads)
    depth, channels, size = ARCHS[args.arch]
    model = CifarResNet(depth, channels)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, channels, size, size)
    y = torch.randint(0, 10, (args.batch,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up: allocator and kernel selection
    wall, cpu = [], []
    for _ in range(args.steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    wall, cpu = statistics.median(wall), statistics.median(cpu)
    print(json.dumps({
        'arch': args.arch,
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'batch': args.batch,
        'img_s': round(args.batch / wall, 2),
        'ms_per_step': round(wall * 1000, 1),
        'cpu_ms_per_step': round(cpu * 1000, 1),
    }))


if __name__ == '__main__':
    main()
