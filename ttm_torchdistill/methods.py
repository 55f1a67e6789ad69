"""The distillation methods by name (recipe folders, `new-recipe --method`) and the loss key of each one's term."""

__all__ = ['INVERSE_TEMPERATURE', 'LOGIT_LOSSES', 'METHOD_LOSSES', 'SEPARATE_CE', 'TEMPERATURE_LOSSES', 'TTM_LOSSES']

METHOD_LOSSES = {'ttm': 'TTMLoss', 'wttm': 'WTTMLoss', 'kd': 'KDLoss', 'dist': 'ExactDISTLoss', 'dkd': 'DKDLoss'}
"""a method's name -> the key of its loss term in torchdistill's registry"""
LOGIT_LOSSES = tuple(METHOD_LOSSES.values())
"""the loss keys of the methods that match logits (the term new-recipe replaces; all of them have a ``beta``)"""
TTM_LOSSES = ('TTMLoss', 'WTTMLoss')
"""the losses with a power-transform exponent gamma (or temperature = 1/gamma)"""
TEMPERATURE_LOSSES = ('TTMLoss', 'WTTMLoss', 'KDLoss', 'DKDLoss')
"""the losses with a ``temperature`` and an ``alpha`` (DIST's temperature is ``tau``)"""
SEPARATE_CE = ('dist', 'dkd')
"""the methods whose loss leaves the cross entropy with the labels to a term of its own (the others hold it, weighted
by their ``alpha``)"""
INVERSE_TEMPERATURE = ('ttm', 'wttm', 'kd', 'dkd')
"""the methods for which `new-recipe --gamma` is 1 / temperature (DIST's ``gamma`` weighs its intra-class term)"""
