"""Test-only: accept generated CIFAR-100 files (torchvision checks their md5 sums) in this process."""
import os

import torchvision.datasets.cifar

torchvision.datasets.cifar.check_integrity = lambda path, md5=None: os.path.isfile(path)
