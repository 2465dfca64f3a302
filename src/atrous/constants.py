"""Constants shared across atrous (the bottom layer: nothing here imports atrous).

- :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`: the input normalization (0-1 RGB) that the
  backbones' ImageNet weights, torchvision's and VainF's checkpoints expect.
- :data:`IGNORE_INDEX`: the one label value that means "not scored, no loss" everywhere
  (datasets map their own void labels to it; losses, evaluation, trimap and crf-search skip it).
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
