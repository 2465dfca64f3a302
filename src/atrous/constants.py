"""Constants shared across atrous (the bottom layer: nothing here imports atrous).

- :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`: the input normalization (0-1 RGB) that the
  backbones' ImageNet weights, torchvision's and VainF's checkpoints expect.
- :data:`IGNORE_INDEX`: the one label value that means "not scored, no loss" everywhere
  (datasets map their own void labels to it; losses, evaluation, trimap and crf-search skip it).
- :data:`MAX_PIXELS`: images declaring more pixels are refused before decoding (bombs).
- :data:`AUTO_TILE_PIXELS`: ``atrous predict``/``eval`` segment larger images in tiles.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
# More than any photo or aerial tile people segment; a header declaring more is a
# decompression bomb (or needs an explicit, larger limit).
MAX_PIXELS = 200_000_000
# Above this many model-input pixels an image is tiled by default (a 12 MP photo whole
# takes GBs of activations); 4 MP keeps common photos and frames whole.
AUTO_TILE_PIXELS = 4_000_000
