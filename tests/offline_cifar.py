"""Test-only switch: accept generated CIFAR-100 files, whose md5 sums torchvision cannot know.

:func:`switch_on` replaces torchvision's integrity check of the CIFAR files by a file-exists check in this process:
the tests' own process (``conftest.cifar100_env``) and, where ``$TTM_TEST_OFFLINE_CIFAR`` is 1, every Python process
they start (``tests/site/sitecustomize.py``). Users' real files pass the real check.
"""
import os

import torchvision.datasets.cifar


def exists(path: str, md5: str | None = None) -> bool:
    return os.path.isfile(path)


def switch_on() -> None:
    torchvision.datasets.cifar.check_integrity = exists
