"""The math layer in plain PyTorch (no torchdistill import): TTM, WTTM and the logit-based rivals DIST and DKD
(:mod:`.logit`), ITRD and the CRD benchmark's feature methods FitNet, AT, VID, RKD and PKT (:mod:`.feature`).

``import ttm_torchdistill.functional as F`` reaches every public function of both modules (``F.ttm_loss``,
``F.rkd_loss``, ...). Teacher-side quantities never carry gradients.
"""
from .feature import (
    at_loss,
    at_terms,
    attention_map,
    hint_loss,
    itrd_terms,
    pkt_loss,
    pool_to_smaller,
    rkd_loss,
    rkd_terms,
    vid_log_scale,
    vid_loss,
    vid_variance,
)
from .logit import (
    REDUCTIONS,
    DistillTerms,
    LossParts,
    combine,
    cross_entropy_from_log_probs,
    dist_loss,
    dist_terms,
    distill_terms,
    dkd_terms,
    entropy_from_log_probs,
    log_power_sum,
    loss_parts,
    power_sum,
    power_transform,
    reduce,
    renyi_entropy,
    shannon_entropy,
    ttm_loss,
    wttm_loss,
)

__all__ = ['REDUCTIONS', 'DistillTerms', 'LossParts', 'at_loss', 'at_terms', 'attention_map', 'combine',
           'cross_entropy_from_log_probs', 'dist_loss', 'dist_terms', 'distill_terms', 'dkd_terms',
           'entropy_from_log_probs', 'hint_loss', 'itrd_terms', 'log_power_sum', 'loss_parts', 'pkt_loss',
           'pool_to_smaller', 'power_sum', 'power_transform', 'reduce', 'renyi_entropy', 'rkd_loss', 'rkd_terms',
           'shannon_entropy', 'ttm_loss', 'vid_log_scale', 'vid_loss', 'vid_variance', 'wttm_loss']
