"""The distillation methods by name (recipe folders, `new-recipe --method`), the loss key of each one's term, and the
loss-term entries recipes are written with (the paper's renderers and `new-recipe` alike): the cross entropy with the
labels and a loss on both models' logits, as lines indented relative to the entry's key."""

__all__ = ['CROSS_ENTROPY_ENTRY', 'INVERSE_TEMPERATURE', 'LOGIT_LOSSES', 'METHOD_LOSSES', 'SEPARATE_CE',
           'TEMPERATURE_LOSSES', 'TTM_LOSSES', 'logit_entry']

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

CROSS_ENTROPY_ENTRY = ['ce:', '  criterion:', "    key: 'CrossEntropyLoss'", '    kwargs:', "      reduction: 'mean'",
                       '  criterion_wrapper:', "    key: 'SimpleLossWrapper'", '    kwargs:', '      input:',
                       '        is_from_teacher: False', "        module_path: '.'", "        io: 'output'",
                       '      target:', '        uses_label: True', '  weight: 1.0']
"""term ``ce``: CrossEntropyLoss on the student's output and the labels, weight 1"""


def logit_entry(name: str, key: str, values: dict[str, object]) -> list[str]:
    """Term ``name``: loss ``key`` on both models' outputs (the logits), with ``values`` (as written) as its kwargs,
    weight 1."""
    io = {'student_module_path': "'.'", 'student_module_io': "'output'", 'teacher_module_path': "'.'",
          'teacher_module_io': "'output'"}
    return [f'{name}:', '  criterion:', f"    key: '{key}'", '    kwargs:',
            *(f'      {k}: {v}' for k, v in {**io, **values}.items()), '  weight: 1.0']
