"""Two small float models for sklearn's bundled 8x8 digits (the poster's own code: run locally to
train and export, never sent to workers). Factories take no arguments: `gpumesh program build
--model examples/digits/models.py:mlp` finds them by name."""

from __future__ import annotations

import torch.nn as nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        x = self.relu1(self.fc1(self.flatten(x)))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):
    """conv-bn-relu, conv-bn-relu, maxpool, residual conv-bn + add + relu, global avgpool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, 10)
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x = self.r1(self.bn1(self.conv1(x)))
        x = self.pool(self.r2(self.bn2(self.conv2(x))))
        x = self.r3(x + self.bn3(self.conv3(x)))
        return self.fc(self.flatten(self.gap(x)))


def mlp() -> nn.Module:
    return MLP()


def cnn() -> nn.Module:
    return CNN()
