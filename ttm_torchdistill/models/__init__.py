"""Models registered in torchdistill's model registry on import."""
from .digits import digits_cnn, digits_mlp
from .mobilenet_v1 import MobileNetV1, mobilenet_v1

__all__ = ['MobileNetV1', 'digits_cnn', 'digits_mlp', 'mobilenet_v1']
