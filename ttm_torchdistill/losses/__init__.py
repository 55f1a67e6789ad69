"""The losses this package registers in torchdistill's mid-level losses: TTMLoss, WTTMLoss and ITRDLoss (with ITRD's
student wrapper Linear4ITRD), the logit-based rivals ExactDISTLoss and DKDLoss, and the CRD benchmark's feature-based
rivals HintLoss (FitNet, with its student wrapper Regressor4FitNet), ExactATLoss and ExactVIDLoss (with its student
wrapper Regressors4ExactVID), each a thin torchdistill glue over :mod:`ttm_torchdistill.functional`; each module
declares its methods (:mod:`ttm_torchdistill.methods`), KD's, RKD's, PKT's, CRD's and ReviewKD's (whose losses are
torchdistill's) among them, in the order TTM, WTTM, KD, DIST, DKD, ITRD, FitNet, AT, VID, RKD, PKT, CRD, ReviewKD."""
from .ttm import TTMLoss, WTTMLoss, resolve_gamma  # isort: skip  (the methods' order: TTM and WTTM first)
from .logit import DKDLoss, ExactDISTLoss  # isort: skip
from .itrd import ITRDLoss, Linear4ITRD  # isort: skip
from .fitnet import HintLoss, Regressor4FitNet  # isort: skip
from .at import ExactATLoss  # isort: skip
from .vid import ExactVIDLoss, Regressors4ExactVID  # isort: skip
from . import embedding  # noqa: F401, isort: skip  (declares RKD and PKT, on torchdistill's own losses)
from . import representation  # noqa: F401, isort: skip  (declares CRD and ReviewKD, torchdistill's losses)

__all__ = ['DKDLoss', 'ExactATLoss', 'ExactDISTLoss', 'ExactVIDLoss', 'HintLoss', 'ITRDLoss', 'Linear4ITRD',
           'Regressor4FitNet', 'Regressors4ExactVID', 'TTMLoss', 'WTTMLoss', 'resolve_gamma']
