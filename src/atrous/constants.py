"""Constants shared across atrous: the ImageNet input normalization (0-1 RGB) that the
backbones' ImageNet weights, torchvision's and VainF's checkpoints expect."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
