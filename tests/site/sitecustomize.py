"""Test-only: every Python process the tests start accepts generated CIFAR-100 files where $TTM_TEST_OFFLINE_CIFAR is 1
(tests/offline_cifar.py; the tests put this folder and tests/ on PYTHONPATH)."""
import os

if os.environ.get('TTM_TEST_OFFLINE_CIFAR') == '1':
    import offline_cifar

    offline_cifar.switch_on()
