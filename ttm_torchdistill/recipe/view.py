"""A recipe's structure, answered once: which model is the student, whether it has a teacher, the loaders' datasets,
whether validation is the test set, the loss terms and their parameters, and the term of its method (the methods'
loss keys: ``ttm_torchdistill.methods``).

Every module that asks such a question of a recipe asks a :class:`RecipeView` of its document.
"""
from __future__ import annotations

from ..methods import logit_methods
from .document import SUB_TERMS, RecipeDocument
from .rules import LOADERS, REQUIRED

__all__ = ['RecipeView']

LOADER_PATHS = dict(zip(('train', 'val', 'test'), LOADERS, strict=True))


class RecipeView:
    """Structural questions about one recipe document (overrides applied)."""

    def __init__(self, doc: RecipeDocument) -> None:
        self.doc = doc

    @property
    def has_teacher(self) -> bool:
        return self.doc.has('models.teacher_model')

    @property
    def student_key(self) -> str:
        """'student_model' for a distillation recipe, 'model' for a plain training one."""
        return 'model' if self.doc.has('models.model') and not self.doc.has('models.student_model') else 'student_model'

    def train_section(self, role: str) -> str:
        """The ``train`` section configuring ``role`` ('student' or 'teacher'): a plain training recipe's student is
        ``train.model``."""
        return 'model' if role == 'student' and not self.has_teacher else role

    def forward_hooks(self, role: str) -> dict:
        """The ``forward_hook`` of the ``train`` section configuring ``role`` ('student' or 'teacher'): the module
        paths whose 'input' and 'output' its io dict holds."""
        hooks = self.doc.value(f'train.{self.train_section(role)}.forward_hook')
        return hooks if isinstance(hooks, dict) else {}

    def model_key(self, label: str) -> object:
        """``models.<label>.key`` (e.g. 'resnet18', 'timm_model')."""
        return self.doc.value(f'models.{label}.key')

    @property
    def dst_ckpt(self) -> object:
        return self.doc.value(f'models.{self.student_key}.dst_ckpt')

    def dataset_id(self, loader: str) -> object:
        """The dataset of the 'train', 'val' or 'test' loader."""
        return self.doc.value(f'{LOADER_PATHS[loader]}.dataset_id')

    def missing(self, command: str, test: bool = True) -> str | None:
        """What the recipe lacks for ``command`` (``test``: train with its test pass), said as a message, or None: a
        required key (:data:`~.rules.REQUIRED`) absent or empty, or stages (``train.stage1``, ...) that the runner
        does not run."""
        student = self.student_key
        for required in REQUIRED:
            if command not in required.commands or (required.tested and command == 'train' and not test):
                continue
            if not self.doc.filled(required.path.format(student=student), required.mapping):
                return required.message(student)
        if command == 'train' and any(key.startswith('stage') for key in self.doc.keys('train')):
            return ("multi-stage recipes (train.stage1, ...) are not supported by ttm-distill; run them with "
                    "torchdistill's example runner")
        return None

    def loader_path(self, loader: str) -> str:
        """The key path of the 'train', 'val' or 'test' loader (``train.train_data_loader``)."""
        return LOADER_PATHS[loader]

    @property
    def criterion_label(self) -> str:
        """How a message names the whole loss: ``train.criterion (KEY)``."""
        return f'train.criterion ({self.doc.value("train.criterion.key")})'

    def term_label(self, name: str) -> str:
        """How a message names the loss term ``name``: ``train.criterion.kwargs.sub_terms.NAME.criterion (KEY)``."""
        key = next((t.key for t in self.doc.loss_terms() if t.name == name), None)
        return f'{SUB_TERMS}.{name}.criterion ({key})'

    def loader_where(self, loader: str) -> str:
        """How a message names the 'train', 'val' or 'test' loader: ``train.train_data_loader (datasets.ID)``."""
        return f'{LOADER_PATHS[loader]} (datasets.{self.dataset_id(loader)})'

    @property
    def val_is_test(self) -> bool:
        """Whether the validation loader reads the test loader's dataset (choosing on it sees the test set)."""
        val = self.dataset_id('val')
        return val is not None and val == self.dataset_id('test')

    def loss_terms(self, keys: tuple[str, ...] | None = None):
        """The terms of ``train.criterion.kwargs.sub_terms`` (those with one of ``keys``)."""
        return [t for t in self.doc.loss_terms() if keys is None or t.key in keys]

    def method_term(self):
        """The term of the recipe's logit method (TTM, WTTM, KD, DIST, DKD: ``methods.logit_methods``), or None."""
        return next(iter(self.loss_terms(tuple(m.loss_key for m in logit_methods()))), None)
