"""The paper's CIFAR-100 suite as one table: architectures, teacher-student pairs, their values.

Zheng & Yang (ICLR 2024) run 13 teacher-student pairs of the CRD benchmark (Tian et al. 2019):
hyperparameters from Tables 8 and 9 and ITRD's weights (Eq. 24), reported top-1 from Tables 1-4 and 6, and the
logit-based rivals DIST and DKD with their authors' settings (DKD's beta per pair from its authors' configs).
Every file under ``recipes/cifar100/`` is rendered from :data:`PAIRS` and :data:`ARCHS` by
:mod:`ttm_torchdistill.paper.cifar100`; edit the table, then run ``python -m ttm_torchdistill.paper``
(``--check`` only compares). A test fails when a committed recipe differs from what is rendered.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ['ARCHS', 'DIST_SETTING', 'DKD_SETTING', 'FEATURE_METHODS', 'FEATURE_TOP1',
           'ITRD_BETA_CORR', 'METHODS', 'NUM_TRAIN', 'PAIRS', 'Arch', 'Pair']

METHODS = ('kd', 'ttm', 'wttm', 'wttm_crd', 'wttm_wo_ce', 'crd', 'itrd', 'wttm_itrd', 'dist', 'dkd')
NUM_TRAIN = 50_000  # CIFAR-100 training images: CRD's memory bank size
ITRD_BETA_CORR = 2.0  # ITRD's weight of L_corr on every pair (Eq. 24); the whole ITRD term has weight mu = 1
DIST_SETTING = {'beta': 2.0, 'gamma': 2.0, 'tau': 4.0}  # DIST's official CIFAR-100 setting (the paper states none)
DKD_SETTING = {'alpha': 1.0, 'temperature': 4.0, 'warmup_epochs': 20}  # DKD's CIFAR-100 setting; beta per pair


@dataclass(frozen=True)
class Arch:
    """One architecture: registry key, the CRD benchmark's name for it (its released checkpoints are
    ``<name>_vanilla/ckpt_epoch_240.pth``) and its CE top-1 in Tables 1/3. The feature CRD embeds is
    :data:`ttm_torchdistill.models.cifar.FEATURES`."""

    key: str
    name: str
    ce_top1: float
    lr: float = 0.05  # the benchmark's lr 0.01 for MobileNetV2 and ShuffleNet students


@dataclass(frozen=True)
class Pair:
    """One teacher -> student row of Tables 1-4, 6 (top-1) and 8, 9 ((gamma, beta) per method), with ITRD's
    beta_mi (0 for three different-architecture pairs, else 1) and DKD's beta (None where the paper has no DKD
    number: "n/a" in Tables 1/3, and no DKD recipe)."""

    teacher: str
    student: str
    ttm: tuple[float, float]
    wttm: tuple[float, float]
    wttm_crd: tuple[float, float]
    wttm_itrd: tuple[float, float]
    top1: dict[str, float]
    wo_ce_gamma: float | None = None  # Table 8's last row: same-architecture pairs only
    itrd_beta_mi: float = 1.0
    dkd_beta: float | None = None

    @property
    def same_arch(self) -> bool:
        return self.wo_ce_gamma is not None

    @property
    def itrd_alpha(self) -> float:
        """ITRD's alpha_it: 1.01 for same-architecture pairs, 1.5 otherwise."""
        return 1.01 if self.same_arch else 1.5

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods with a recipe: those the paper reports on this pair."""
        return tuple(m for m in METHODS if m in self.top1)


ARCHS = {a.key: a for a in (
    Arch('wrn_40_2', 'wrn_40_2', 75.61),
    Arch('wrn_16_2', 'wrn_16_2', 73.26),
    Arch('wrn_40_1', 'wrn_40_1', 71.98),
    Arch('resnet56', 'resnet56', 72.34),
    Arch('resnet110', 'resnet110', 74.31),
    Arch('resnet20', 'resnet20', 69.06),
    Arch('resnet32', 'resnet32', 71.14),
    Arch('resnet32x4', 'resnet32x4', 79.42),
    Arch('resnet8x4', 'resnet8x4', 72.50),
    Arch('vgg13_cifar', 'vgg13', 74.64),
    Arch('vgg8_cifar', 'vgg8', 70.36),
    Arch('resnet50_cifar', 'ResNet50', 79.34),
    Arch('mobilenetv2_cifar', 'MobileNetV2', 64.6, lr=0.01),
    Arch('shufflenetv1_cifar', 'ShuffleV1', 70.5, lr=0.01),
    Arch('shufflenetv2_cifar', 'ShuffleV2', 71.82, lr=0.01),
)}


def _top1(kd: float, ttm: float, wttm: float, wttm_crd: float, wo_ce: float | None = None, *, crd: float,
          itrd: float, wttm_itrd: float, dist: float, dkd: float | None) -> dict[str, float]:
    top1 = {'kd': kd, 'ttm': ttm, 'wttm': wttm, 'wttm_crd': wttm_crd}
    top1 = top1 if wo_ce is None else dict(top1, wttm_wo_ce=wo_ce)
    top1 = dict(top1, crd=crd, itrd=itrd, wttm_itrd=wttm_itrd, dist=dist)
    return top1 if dkd is None else dict(top1, dkd=dkd)


# Each pair: TTM, WTTM, WTTM + CRD, WTTM + ITRD (gamma, beta); top-1 of KD, TTM, WTTM, WTTM + CRD (, WTTM w/o CE),
# then CRD alone (Tables 1-4), ITRD alone and WTTM + ITRD (Tables 2, 4; 3 runs each), DIST and DKD (Tables 1/3, the
# numbers of their own papers; None: "n/a"), and DKD's beta of its authors' config for the pair.
PAIRS = (
    # same architecture (Table 8; top-1 of Tables 1, 2 and 6, mean of 5 runs)
    Pair('wrn_40_2', 'wrn_16_2', (0.1, 101), (0.1, 4), (0.1, 4), (0.3, 6),
         _top1(74.92, 76.23, 76.37, 76.61, 75.11, crd=75.48, itrd=76.12, wttm_itrd=76.65,
               dist=75.51, dkd=76.24), 0.2, dkd_beta=6),
    Pair('wrn_40_2', 'wrn_40_1', (0.1, 76), (0.1, 3), (0.1, 2), (0.4, 0.08),
         _top1(73.54, 74.32, 74.58, 74.94, 73.16, crd=74.14, itrd=75.18, wttm_itrd=75.34,
               dist=74.73, dkd=74.81), 0.5, dkd_beta=6),
    Pair('resnet56', 'resnet20', (0.3, 7), (0.3, 1.5), (0.3, 0.6), (0.5, 5),
         _top1(70.66, 71.83, 71.92, 72.20, 70.95, crd=71.16, itrd=71.47, wttm_itrd=72.16,
               dist=71.75, dkd=71.97), 0.6, dkd_beta=2),
    Pair('resnet110', 'resnet20', (0.2, 8), (0.2, 2), (0.2, 1.4), (0.3, 1.5),
         _top1(70.67, 71.46, 71.67, 72.13, 70.71, crd=71.46, itrd=71.99, wttm_itrd=72.20,
               dist=71.65, dkd=None), 0.4),
    Pair('resnet110', 'resnet32', (0.1, 33), (0.1, 1.5), (0.2, 1), (0.3, 0.015),
         _top1(73.08, 73.97, 74.13, 74.52, 73.21, crd=73.48, itrd=74.26, wttm_itrd=74.36,
               dist=73.69, dkd=74.11), 0.4, dkd_beta=2),
    Pair('resnet32x4', 'resnet8x4', (0.1, 100), (0.1, 3), (0.2, 4), (0.1, 1.5),
         _top1(73.33, 76.17, 76.06, 76.65, 72.94, crd=75.51, itrd=76.19, wttm_itrd=77.36,
               dist=76.31, dkd=76.32), 0.5, dkd_beta=8),
    Pair('vgg13_cifar', 'vgg8_cifar', (0.1, 45), (0.1, 2.25), (0.2, 4), (0.1, 0.5),
         _top1(72.98, 74.33, 74.44, 74.71, 74.04, crd=73.94, itrd=74.93, wttm_itrd=75.13,
               dist=73.89, dkd=74.68), 0.2, dkd_beta=6),
    # different architectures (Table 9; top-1 of Tables 3 and 4, mean of 3 runs)
    Pair('vgg13_cifar', 'mobilenetv2_cifar', (0.2, 16), (0.2, 3), (0.3, 4.2), (0.3, 0.03),
         _top1(67.37, 68.98, 69.16, 70.30, crd=69.73, itrd=70.39, wttm_itrd=70.70,
               dist=68.50, dkd=69.71), dkd_beta=6),
    Pair('resnet50_cifar', 'mobilenetv2_cifar', (0.2, 20), (0.2, 5), (0.3, 3), (0.2, 0.02),
         _top1(67.35, 69.24, 69.59, 70.84, crd=69.11, itrd=71.41, wttm_itrd=71.56,
               dist=68.66, dkd=70.35), itrd_beta_mi=0.0, dkd_beta=8),
    Pair('resnet50_cifar', 'vgg8_cifar', (0.1, 70), (0.1, 2), (0.1, 3), (0.1, 1),
         _top1(73.81, 74.87, 74.82, 75.30, crd=74.30, itrd=75.71, wttm_itrd=76.00,
               dist=74.11, dkd=None), itrd_beta_mi=0.0),
    Pair('resnet32x4', 'shufflenetv1_cifar', (0.2, 12), (0.2, 1.4), (0.2, 0.4), (0.3, 0.6),
         _top1(74.07, 74.18, 74.37, 75.82, crd=75.11, itrd=76.91, wttm_itrd=77.03,
               dist=76.34, dkd=76.45), dkd_beta=8),
    Pair('resnet32x4', 'shufflenetv2_cifar', (0.4, 40), (0.4, 16), (0.4, 12), (0.4, 0.8),
         _top1(74.45, 76.57, 76.55, 77.04, crd=75.65, itrd=77.40, wttm_itrd=77.68,
               dist=77.35, dkd=77.07), dkd_beta=8),
    Pair('wrn_40_2', 'shufflenetv1_cifar', (0.3, 8), (0.3, 3), (0.2, 0.16), (0.1, 0.2),
         _top1(74.83, 75.39, 75.42, 76.86, crd=76.05, itrd=77.35, wttm_itrd=77.44,
               dist=76.40, dkd=76.70), itrd_beta_mi=0.0, dkd_beta=8),
)

# The feature-based rivals of Tables 1 and 3, trained as the CRD benchmark trains them: cross entropy (weight 1), no KD
# term, and the feature loss with the benchmark's weight (its `-b`); the paper copies their rows from the benchmark.
FEATURE_METHODS = ('fitnet', 'at', 'vid', 'rkd', 'pkt')  # their weights: the methods' default_weight
# Reported top-1 per method, one number per pair in the order of PAIRS (Table 1: the 7 same-architecture pairs, then
# Table 3: the 6 others).
FEATURE_TOP1 = {
    'fitnet': (73.58, 72.24, 69.21, 68.99, 71.06, 73.50, 71.02, 64.14, 63.16, 70.69, 73.59, 73.54, 73.73),
    'at': (74.08, 72.77, 70.55, 70.22, 72.31, 73.44, 71.43, 59.40, 58.58, 71.84, 71.73, 72.73, 73.32),
    'vid': (74.11, 73.30, 70.38, 70.16, 72.61, 73.09, 71.23, 65.56, 67.57, 70.30, 73.38, 73.40, 73.61),
    'rkd': (73.35, 72.22, 69.61, 69.25, 71.82, 71.90, 71.48, 64.52, 64.43, 71.50, 72.28, 73.21, 72.21),
    'pkt': (74.54, 73.45, 70.34, 70.25, 72.61, 73.64, 72.88, 67.13, 66.52, 73.01, 74.10, 74.69, 73.89),
}
