"""The DeepLab model family: builders, the configuration table, and the building blocks.

>>> import atrous.models as M
>>> model = M.deeplabv3plus_resnet101(num_classes=21, output_stride=16)
>>> model = M.build("deeplabv3_resnet50", num_classes=19, output_stride=8, aux=True)
"""

from __future__ import annotations

from .aspp import ASPP, ASPPSum
from .backbone import Backbone, FeatureInfo
from .builder import build, model_builder
from .decoder import DeepLabV3PlusHead
from .deeplab import DeepLab
from .heads import ASPPSumHead, CascadeHead, DeepLabV3Head, FCNHead, LargeFOVHead
from .layers import FrozenBatchNorm2d, SeparableConv2d, make_norm
from .mobilenetv2 import MobileNetV2
from .mobilenetv3 import MobileNetV3Large
from .multigrid import multi_grid_rates
from .resnet import ResNet
from .resnet_beta import ResNetBeta
from .vgg import VGG16
from .xception import Xception65
from .zoo import ALIASES, MODELS, ModelSpec, count_parameters, get_spec, list_models, resolve_name

deeplabv1_vgg16 = model_builder("deeplabv1_vgg16")
deeplabv2_resnet101 = model_builder("deeplabv2_resnet101")
deeplabv3_resnet50 = model_builder("deeplabv3_resnet50")
deeplabv3_resnet101 = model_builder("deeplabv3_resnet101")
deeplabv3_mobilenetv2 = model_builder("deeplabv3_mobilenetv2")
deeplabv3_mobilenetv3_large = model_builder("deeplabv3_mobilenetv3_large")
deeplabv3plus_resnet50 = model_builder("deeplabv3plus_resnet50")
deeplabv3plus_resnet101 = model_builder("deeplabv3plus_resnet101")
deeplabv3plus_mobilenetv2 = model_builder("deeplabv3plus_mobilenetv2")
deeplabv3plus_mobilenetv3_large = model_builder("deeplabv3plus_mobilenetv3_large")
deeplabv3plus_xception65 = model_builder("deeplabv3plus_xception65")
deeplabv3plus_resnet50_beta = model_builder("deeplabv3plus_resnet50_beta")
deeplabv3plus_resnet101_beta = model_builder("deeplabv3plus_resnet101_beta")

__all__ = [
    "ALIASES",
    "ASPP",
    "MODELS",
    "VGG16",
    "ASPPSum",
    "ASPPSumHead",
    "Backbone",
    "CascadeHead",
    "DeepLab",
    "DeepLabV3Head",
    "DeepLabV3PlusHead",
    "FCNHead",
    "FeatureInfo",
    "FrozenBatchNorm2d",
    "LargeFOVHead",
    "MobileNetV2",
    "MobileNetV3Large",
    "ModelSpec",
    "ResNet",
    "ResNetBeta",
    "SeparableConv2d",
    "Xception65",
    "build",
    "count_parameters",
    "deeplabv1_vgg16",
    "deeplabv2_resnet101",
    "deeplabv3_mobilenetv2",
    "deeplabv3_mobilenetv3_large",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3plus_mobilenetv2",
    "deeplabv3plus_mobilenetv3_large",
    "deeplabv3plus_resnet50",
    "deeplabv3plus_resnet50_beta",
    "deeplabv3plus_resnet101",
    "deeplabv3plus_resnet101_beta",
    "deeplabv3plus_xception65",
    "get_spec",
    "list_models",
    "make_norm",
    "multi_grid_rates",
    "resolve_name",
]
