"""Model registry: small CNNs for the digits, CIFAR-style ResNet-18 / VGG-16, any timm or torchvision model.

Imports no other wfkern module. Models are always randomly initialised; nothing is downloaded.
"""

from wfkern.models.cifar_resnet import CifarResNet18
from wfkern.models.cifar_vgg import CifarVGG16
from wfkern.models.external import ChannelAdapter
from wfkern.models.registry import DEFAULT_MODEL, create_model, list_models, model_family, register_model
from wfkern.models.small_cnn import SmallCNN, SmallVGG

__all__ = ["CifarResNet18", "CifarVGG16", "ChannelAdapter", "SmallCNN", "SmallVGG",
           "DEFAULT_MODEL", "create_model", "list_models", "model_family", "register_model"]
