"""The losses this package registers in torchdistill's mid-level losses: TTMLoss, WTTMLoss and ITRDLoss (with ITRD's
student wrapper Linear4ITRD), the rivals ExactDISTLoss and DKDLoss, each a thin torchdistill glue over
:mod:`ttm_torchdistill.functional`, and the protocol through which they report their diagnostics
(:mod:`.diagnostics`)."""
from .diagnostics import ReportsDiagnostics, reporters
from .itrd import ITRDLoss, Linear4ITRD
from .logit import DKDLoss, ExactDISTLoss
from .ttm import TTMLoss, WTTMLoss, resolve_gamma

__all__ = ['DKDLoss', 'ExactDISTLoss', 'ITRDLoss', 'Linear4ITRD', 'ReportsDiagnostics', 'TTMLoss', 'WTTMLoss',
           'reporters', 'resolve_gamma']
