"""The losses this package registers in torchdistill's mid-level losses: TTMLoss, WTTMLoss and ITRDLoss (with ITRD's
student wrapper Linear4ITRD), the rivals ExactDISTLoss and DKDLoss, each a thin torchdistill glue over
:mod:`ttm_torchdistill.functional`; each module declares its methods (:mod:`ttm_torchdistill.methods`), KD's (whose
loss is torchdistill's KDLoss) among them, in the order TTM, WTTM, KD, DIST, DKD, ITRD."""
from .ttm import TTMLoss, WTTMLoss, resolve_gamma  # isort: skip  (the methods' order: TTM and WTTM first)
from .logit import DKDLoss, ExactDISTLoss  # isort: skip
from .itrd import ITRDLoss, Linear4ITRD  # isort: skip

__all__ = ['DKDLoss', 'ExactDISTLoss', 'ITRDLoss', 'Linear4ITRD', 'TTMLoss', 'WTTMLoss', 'resolve_gamma']
