"""A throw-away logit method for the method registry's test: a loss class and its declaration, nothing else of the
package edited. LogitMSELoss: alpha * CE(y, q) + beta * mean((scale * z - scale * v)^2)."""
import torch
from torch.nn import functional
from torchdistill.losses.registry import register_mid_level_loss

from ttm_torchdistill.methods import BaseTerm, Knob, LossHooks, Method, register_method


def _kwargs(method: Method, gamma: float | None, beta: float | None, base: BaseTerm) -> dict[str, object]:
    return {'beta': beta if beta is not None else base.own(method, 'beta', 1.0),
            'scale': base.own(method, 'scale', 1.0), 'alpha': 1.0}


@register_method(Method('mse', 'LogitMSELoss', short_names={'beta': 'the weight of the logit MSE',
                                                            'scale': 'the scale both logits are multiplied by'},
                        beta=Knob('weight', 'the weight of the logit MSE'), beta_carries=True, recipe_kwargs=_kwargs))
@register_mid_level_loss
class LogitMSELoss(LossHooks):
    diagnostic_names = ('logit_mse',)

    def __init__(self, student_module_path='.', student_module_io='output', teacher_module_path='.',
                 teacher_module_io='output', alpha=1.0, beta=1.0, scale=1.0):
        super().__init__()
        if scale <= 0:
            raise ValueError(f'LogitMSELoss: scale={scale!r} is invalid: accepted range is a number > 0')
        self.paths = (student_module_path, student_module_io, teacher_module_path, teacher_module_io)
        self.alpha, self.beta, self.scale = alpha, beta, scale
        self._last = None

    def forward(self, student_io_dict, teacher_io_dict, targets=None, *args, **kwargs):
        s_path, s_io, t_path, t_io = self.paths
        z, v = student_io_dict[s_path][s_io], teacher_io_dict[t_path][t_io].detach()
        mse = functional.mse_loss(self.scale * z, self.scale * v)
        self._last = mse.detach()[None]
        return self.alpha * functional.cross_entropy(z, targets) + self.beta * mse

    def diagnostics(self) -> torch.Tensor | None:
        return self._last
