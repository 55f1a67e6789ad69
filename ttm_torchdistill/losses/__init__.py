"""The losses this package registers in torchdistill's mid-level losses: TTMLoss, WTTMLoss and ITRDLoss (with ITRD's
student wrapper Linear4ITRD), the rivals ExactDISTLoss and DKDLoss, each a thin torchdistill glue over
:mod:`ttm_torchdistill.functional`; each module declares its methods (:mod:`ttm_torchdistill.methods`), KD's, CRD's and
ReviewKD's (whose losses are torchdistill's) among them, in the order TTM, WTTM, KD, DIST, DKD, ITRD, CRD, ReviewKD."""
from .ttm import TTMLoss, WTTMLoss, resolve_gamma  # isort: skip  (the methods' order: TTM and WTTM first)
from .logit import DKDLoss, ExactDISTLoss  # isort: skip
from .itrd import ITRDLoss, Linear4ITRD  # isort: skip
from . import representation  # noqa: F401, isort: skip  (declares CRD and ReviewKD, torchdistill's losses)

__all__ = ['DKDLoss', 'ExactDISTLoss', 'ITRDLoss', 'Linear4ITRD', 'TTMLoss', 'WTTMLoss', 'resolve_gamma']
