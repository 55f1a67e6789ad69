"""`new-recipe --method` with a feature method (FitNet, AT, VID, RKD, PKT): cross entropy plus the method's term, and
the hooks and student wrapper the method's declaration writes from the new pair's feature lists.

The features are the CRD benchmark's feature lists (:mod:`ttm_torchdistill.models.cifar.features`), known for its 15
CIFAR-100 architectures at 32 x 32; a pair or a base outside them is refused in one line. The base keeps its data,
schedule, optimizer and checkpoint layout; its loss terms, its ``train.teacher``/``train.student`` entries and a
dataset wrapper (CRD's) give way to the method's. The other way round, a logit method's recipe from a feature
method's base takes the place of its feature term, and the models lose their hooks and wrappers. CRD, ITRD and
ReviewKD recipes (whose wrappers and sizes depend on more than a feature list) are written from a base of the same
method: its terms are kept and resized to the new pair (:mod:`.new_recipe_check` measures the sizes).
"""
from __future__ import annotations

from ..errors import UsageError
from ..methods import CROSS_ENTROPY_ENTRY, FeatureRecipe, Method, method_by_loss, methods
from ..models.cifar import FEATURE_LISTS, model_features
from ..recipe import SUB_TERMS, LossTerm, RecipeDocument, RecipeEdits

__all__ = ['base_feature_term', 'check_kept_method', 'feature_method_edits', 'kept_methods', 'plain_roles']

TRAIN_WRAPPER = 'train.train_data_loader.dataset_wrapper'


def _features_of(flag: str, key: str, method: Method):
    if key not in FEATURE_LISTS:
        raise UsageError(f'--method {method.name}: {flag} {key} has no known feature list ({method.name} hooks the '
                         "entries of the CRD benchmark's feature lists, known for the CIFAR-100 architectures "
                         f'{", ".join(sorted(FEATURE_LISTS))}); write the hooks of a {method.name} recipe for it by '
                         f'hand, from a shipped cifar100/{method.name}/ recipe')
    return model_features(key)


def feature_method_edits(doc: RecipeDocument, edits: RecipeEdits, method: Method, weight: float, teacher: str,
                         student: str, cifar: bool) -> None:
    """Edit ``doc`` into a recipe of ``method`` (term weight ``weight``) for the registry models ``teacher`` ->
    ``student``; ``cifar``: the base trains on CIFAR (the feature sizes are those of 32 x 32 inputs)."""
    parts = method.recipe(_features_of('--teacher', teacher, method), _features_of('--student', student, method))
    if not cifar:
        raise UsageError(f'--method {method.name}: the base recipe {doc.source} does not train on CIFAR; the feature '
                         'lists (and the sizes of the regressors) are those of 32 x 32 CIFAR inputs: start from a '
                         'cifar100/ recipe')
    terms = doc.loss_terms()
    if not terms:
        raise UsageError(f'--from {doc.source}: the base recipe has no loss term under {SUB_TERMS} to replace')
    edits.set_entry(SUB_TERMS, terms[-1].name,  # the last: an entry edits can rewrite but not drop
                    CROSS_ENTROPY_ENTRY + parts.term_lines(method.entry, method.loss_key, weight))
    for term in terms[:-1]:
        edits.drop_entry(SUB_TERMS, term.name)
    for role, lines in (('teacher', parts.teacher_lines()), ('student', parts.student_lines())):
        if not doc.has(f'train.{role}'):
            raise UsageError(f'--from {doc.source}: train.{role} is missing in the base recipe')
        edits.set_entry('train', role, lines)
    if doc.has(TRAIN_WRAPPER):  # CRD's sampler of negatives: the feature methods read plain batches
        edits.drop_entry('train.train_data_loader', 'dataset_wrapper')


def base_feature_term(doc: RecipeDocument) -> LossTerm | None:
    """The base's feature-method term (FitNet's, AT's, ...), or None."""
    return next((t for t in doc.loss_terms() if (m := method_by_loss(t.key)) is not None and m.recipe), None)


def plain_roles(doc: RecipeDocument, edits: RecipeEdits) -> None:
    """``train.teacher`` and ``train.student`` without hooks or wrappers (the student in DDP): what a logit method
    reads, the models' outputs."""
    plain = FeatureRecipe((), (), [])
    for role, lines in (('teacher', plain.teacher_lines()), ('student', plain.student_lines())):
        if doc.has(f'train.{role}'):
            edits.set_entry('train', role, lines)


def kept_methods() -> list[Method]:
    """The methods new-recipe writes only from a base of their own (CRD, ITRD, ReviewKD)."""
    return [m for m in methods() if not m.logit and m.recipe is None]


def check_kept_method(doc: RecipeDocument, method: Method) -> None:
    """Refuse a base whose terms are not the cross entropy and ``method``'s (a CRD recipe comes from a CRD base)."""
    others = [t for t in doc.loss_terms() if t.key not in ('CrossEntropyLoss', method.loss_key)]
    if others or not any(t.key == method.loss_key for t in doc.loss_terms()):
        raise UsageError(f'--method {method.name}: new-recipe writes a {method.name} recipe from a base whose loss is '
                         f'cross entropy plus {method.loss_key} (a shipped {method.name}/ recipe), keeping its terms '
                         f'and resizing them for the new pair; {doc.source} has '
                         f'{", ".join(f"{t.name} ({t.key})" for t in doc.loss_terms())}')
