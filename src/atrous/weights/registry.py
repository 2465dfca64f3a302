"""The registry of published weights: one :class:`~.entry.Entry` per file, a table a reader
can audit against its sources.

Every fact about another project's file (URL, hash, metrics and their protocol, classes,
preprocessing, licence) was read from that project's published source, named in the row's
comment and ``source`` field; a fact the source does not publish is left out and named in
``unknown``. Sources, as read for this table:

* torchvision: ``pytorch/vision`` ``torchvision/models/segmentation/deeplabv3.py`` (the
  ``*_Weights`` enums: URL with the SHA-256 prefix, ``num_params``, ``_metrics``
  "COCO-val2017-VOC-labels", ``_file_size``, ``_docs``), ``resnet.py``, ``mobilenetv2.py``,
  ``mobilenetv3.py``, ``vgg.py`` (the ImageNet enums), ``transforms/_presets.py``
  (``SemanticSegmentation(resize_size=520)``: resize, ImageNet mean/std),
  ``references/segmentation/train.py`` (evaluation at ``SegmentationPresetEval(base_size=520)``)
  and the README's "Pre-trained Model License" section.
* TF model zoo: ``tensorflow/models`` ``research/deeplab/g3doc/model_zoo.md`` (commit
  d318246c: checkpoint names, URLs, eval OS, eval scales, flip, mIoU, file sizes),
  ``g3doc/pascal.md`` and ``g3doc/cityscapes.md`` (``--eval_crop_size`` 513x513 and
  1025x2049), the repository's LICENSE (Apache-2.0). The zoo prints its URLs as ``http://``;
  the registry fetches the same path from the same host over https.

Names are ``<source>:<name>``; the source's own checkpoint name where it has one.
"""

from __future__ import annotations

import difflib

from atrous.constants import IMAGENET_MEAN, IMAGENET_STD

from .entry import Entry, Metric, Preprocess
from .errors import CheckpointError
from .tf_deeplab import TF_MEAN, TF_STD

# -- torchvision ------------------------------------------------------------------------------
_TV = "https://download.pytorch.org/models/"
_TV_SEG = "pytorch/vision torchvision/models/segmentation/deeplabv3.py"
_TV_DATA = "COCO train2017, only the 20 categories present in Pascal VOC (torchvision _docs)"
_TV_SPLIT = "COCO-val2017-VOC-labels (COCO val2017, the 20 VOC categories)"
_TV_EVAL = "shorter side resized to 520 (SegmentationPresetEval), single scale, no flip"
_TV_PRE = Preprocess(IMAGENET_MEAN, IMAGENET_STD, resize_shorter=520)
_TV_IMAGENET_PRE = Preprocess(IMAGENET_MEAN, IMAGENET_STD)
_TV_IMAGENET_EVAL = "resize 256, centre crop 224 (ImageClassification(crop_size=224))"
_TV_LICENSE = (
    "torchvision code BSD-3-Clause; its README ('Pre-trained Model License'): the weights "
    "may have their own licences or terms derived from the training data"
)
_VOC21 = "21: background + the 20 Pascal VOC classes"

# -- TF model zoo -----------------------------------------------------------------------------
_TF = "https://download.tensorflow.org/models/"
_ZOO = "tensorflow/models research/deeplab/g3doc/model_zoo.md (d318246c)"
_TF_PRE = Preprocess(TF_MEAN, TF_STD)  # 2/255 x - 1 (feature_extractor.py, see .tf_deeplab)
_TF_LICENSE = (
    "Apache-2.0 (tensorflow/models LICENSE); model_zoo.md states no other terms for the "
    "checkpoints; the training data's terms may apply"
)
_VOC_VAL, _VOC_TEST = "PASCAL VOC 2012 val", "PASCAL VOC 2012 test"
# (protocol as printed, output stride, scales, flip) of the zoo's two evaluation settings
_SCALES_VOC = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # [0.5:0.25:1.75]
_SCALES_CS = (0.75, 1.0, 1.25)  # [0.75:0.25:1.25]
_VOC_OS16 = ("OS 16, eval scales [1.0], no flip, eval crop 513x513", 16)
_VOC_MS = (
    "OS 8, eval scales [0.5:0.25:1.75], left-right flip, eval crop 513x513",
    8,
    _SCALES_VOC,
    True,
)
_CS_VAL = "Cityscapes val"
_CS_OS16 = ("OS 16, eval scales [1.0], no flip, eval crop 1025x2049", 16)
_CS_MS = (
    "OS 8, eval scales [0.75:0.25:1.25], left-right flip, eval crop 1025x2049",
    8,
    _SCALES_CS,
    True,
)
_ADE_MS = (
    "OS 8, eval scales [0.5:0.25:1.75], left-right flip, longest side resized to 513",
    8,
    _SCALES_VOC,
    True,
)
_MS_ONLY = (
    "the source reports this checkpoint only at OS 8 with multi-scale + flip; it loads at OS 8 "
    "and predicts at scale 1 unless told (--scales 0.5,0.75,1,1.25,1.5,1.75 --flip reproduces "
    "the protocol)"
)
_TF_NO_PARAMS = "parameter count (the zoo reports Multiply-Adds, not parameters)"


def _tv(file: str) -> tuple[str, ...]:
    return (_TV + file,)


def _tf(file: str) -> dict:
    return {
        "urls": (_TF + file,),
        "published_urls": ("http://download.tensorflow.org/models/" + file,),
    }


# (a table, one entry a block of grouped fields, each row led by its source comment: the
# formatter would put every field on its own line, 4x the length; hence its fmt: skip)
ENTRIES: tuple[Entry, ...] = (
    # torchvision DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1 (deeplabv3.py): URL,
    # num_params, _metrics COCO-val2017-VOC-labels, _file_size; transforms from
    # transforms/_presets.py; eval preset from references/segmentation/train.py.
    Entry(
        name="torchvision:deeplabv3_resnet50_coco", kind="segmentation",
        format="torchvision_pth", urls=_tv("deeplabv3_resnet50_coco-cd0a2569.pth"),
        sha256_prefix="cd0a2569", arch="deeplabv3_resnet50", dataset=_TV_DATA, classes=_VOC21,
        num_classes=21, preprocessing=_TV_PRE, num_params=42004074, size_mb=160.515,
        metrics=(Metric("mIoU", 66.4, _TV_SPLIT, _TV_EVAL + ", OS 8", 8),
                 Metric("pixel accuracy", 92.4, _TV_SPLIT, _TV_EVAL + ", OS 8", 8)),
        license=_TV_LICENSE, source=_TV_SEG + ", DeepLabV3_ResNet50_Weights",
        notes="torchvision's configuration: OS 8, rates (12, 24, 36), aux head kept",
    ),
    # torchvision DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1 (deeplabv3.py).
    Entry(
        name="torchvision:deeplabv3_resnet101_coco", kind="segmentation",
        format="torchvision_pth", urls=_tv("deeplabv3_resnet101_coco-586e9e4e.pth"),
        sha256_prefix="586e9e4e", arch="deeplabv3_resnet101", dataset=_TV_DATA,
        classes=_VOC21, num_classes=21, preprocessing=_TV_PRE, num_params=60996202,
        size_mb=233.217,
        metrics=(Metric("mIoU", 67.4, _TV_SPLIT, _TV_EVAL + ", OS 8", 8),
                 Metric("pixel accuracy", 92.4, _TV_SPLIT, _TV_EVAL + ", OS 8", 8)),
        license=_TV_LICENSE, source=_TV_SEG + ", DeepLabV3_ResNet101_Weights",
        notes="torchvision's configuration: OS 8, rates (12, 24, 36), aux head kept",
    ),
    # torchvision DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1 (deeplabv3.py).
    Entry(
        name="torchvision:deeplabv3_mobilenet_v3_large_coco", kind="segmentation",
        format="torchvision_pth", urls=_tv("deeplabv3_mobilenet_v3_large-fc3c493d.pth"),
        sha256_prefix="fc3c493d", arch="deeplabv3_mobilenetv3_large", dataset=_TV_DATA,
        classes=_VOC21, num_classes=21, preprocessing=_TV_PRE, num_params=11029328,
        size_mb=42.301,
        metrics=(Metric("mIoU", 60.3, _TV_SPLIT, _TV_EVAL + ", OS 16", 16),
                 Metric("pixel accuracy", 91.2, _TV_SPLIT, _TV_EVAL + ", OS 16", 16)),
        license=_TV_LICENSE, source=_TV_SEG + ", DeepLabV3_MobileNet_V3_Large_Weights",
        notes="torchvision's configuration: OS 16 with rates (12, 24, 36), aux head kept",
    ),
    # model_zoo.md, "DeepLab models trained on PASCAL VOC 2012": xception65_coco_voc_trainaug,
    # URL, eval OS 16 [1.0] no flip 82.20% (val) / OS 8 [0.5:0.25:1.75] flip 83.58% (val),
    # 439MB, ASPP [6,12,18] at OS 16, decoder OS 4; eval crop 513 from g3doc/pascal.md.
    Entry(
        name="tf:xception65_coco_voc_trainaug", kind="segmentation", format="tf_zoo_tarball",
        **_tf("deeplabv3_pascal_train_aug_2018_01_04.tar.gz"), arch="deeplabv3plus_xception65",
        dataset="ImageNet, MS-COCO, then VOC 2012 train_aug", classes=_VOC21, num_classes=21,
        preprocessing=_TF_PRE, size_mb=439, build={"output_stride": 16},
        metrics=(Metric("mIoU", 82.20, _VOC_VAL, *_VOC_OS16), Metric("mIoU", 83.58, _VOC_VAL, *_VOC_MS)),
        license=_TF_LICENSE, source=_ZOO + ", PASCAL VOC 2012 table", unknown=_TF_NO_PARAMS,
    ),
    # model_zoo.md, VOC table: xception65_coco_voc_trainval, URL, OS 8 [0.5:0.25:1.75] flip,
    # 87.80% (test), 439MB.
    Entry(
        name="tf:xception65_coco_voc_trainval", kind="segmentation", format="tf_zoo_tarball",
        **_tf("deeplabv3_pascal_trainval_2018_01_04.tar.gz"), arch="deeplabv3plus_xception65",
        dataset="ImageNet, MS-COCO, then VOC 2012 train_aug + trainval", classes=_VOC21,
        num_classes=21, preprocessing=_TF_PRE, size_mb=439, build={"output_stride": 8},
        metrics=(Metric("mIoU", 87.80, _VOC_TEST, *_VOC_MS),), license=_TF_LICENSE,
        source=_ZOO + ", PASCAL VOC 2012 table", unknown=_TF_NO_PARAMS, notes=_MS_ONLY,
    ),
    # model_zoo.md, VOC table: mobilenetv2_coco_voc_trainaug, URL, OS 16 [1.0] 75.32% (val) /
    # OS 8 [0.5:0.25:1.75] flip 77.33 (val), 23MB; "MobileNet-v2 based models do not employ
    # ASPP and decoder modules".
    Entry(
        name="tf:mobilenetv2_coco_voc_trainaug", kind="segmentation", format="tf_zoo_tarball",
        **_tf("deeplabv3_mnv2_pascal_train_aug_2018_01_29.tar.gz"), arch="deeplabv3_mobilenetv2",
        dataset="ImageNet, MS-COCO, then VOC 2012 train_aug", classes=_VOC21, num_classes=21,
        preprocessing=_TF_PRE, size_mb=23, build={"output_stride": 16},
        metrics=(Metric("mIoU", 75.32, _VOC_VAL, *_VOC_OS16), Metric("mIoU", 77.33, _VOC_VAL, *_VOC_MS)),
        license=_TF_LICENSE, source=_ZOO + ", PASCAL VOC 2012 table", unknown=_TF_NO_PARAMS,
    ),
    # model_zoo.md, VOC table: mobilenetv2_coco_voc_trainval, URL, OS 8 [0.5:0.25:1.75] flip,
    # 80.25% (test), 23MB.
    Entry(
        name="tf:mobilenetv2_coco_voc_trainval", kind="segmentation", format="tf_zoo_tarball",
        **_tf("deeplabv3_mnv2_pascal_trainval_2018_01_29.tar.gz"), arch="deeplabv3_mobilenetv2",
        dataset="ImageNet, MS-COCO, then VOC 2012 train_aug + trainval", classes=_VOC21,
        num_classes=21, preprocessing=_TF_PRE, size_mb=23, build={"output_stride": 8},
        metrics=(Metric("mIoU", 80.25, _VOC_TEST, *_VOC_MS),), license=_TF_LICENSE,
        source=_ZOO + ", PASCAL VOC 2012 table", unknown=_TF_NO_PARAMS, notes=_MS_ONLY,
    ),
    # model_zoo.md, "DeepLab models trained on Cityscapes": xception65_cityscapes_trainfine,
    # URL, OS 16 [1.0] 78.79% (val) / OS 8 [0.75:0.25:1.25] flip 80.42% (val), 439MB;
    # eval crop 1025x2049 from g3doc/cityscapes.md.
    Entry(
        name="tf:xception65_cityscapes_trainfine", kind="segmentation", format="tf_zoo_tarball",
        **_tf("deeplabv3_cityscapes_train_2018_02_06.tar.gz"), arch="deeplabv3plus_xception65",
        dataset="ImageNet, then Cityscapes train_fine", classes="19 Cityscapes train ids",
        num_classes=19, preprocessing=_TF_PRE, size_mb=439, build={"output_stride": 16},
        metrics=(Metric("mIoU", 78.79, _CS_VAL, *_CS_OS16), Metric("mIoU", 80.42, _CS_VAL, *_CS_MS)),
        license=_TF_LICENSE, source=_ZOO + ", Cityscapes table", unknown=_TF_NO_PARAMS,
    ),
    # model_zoo.md, Cityscapes table: mobilenetv2_coco_cityscapes_trainfine, URL, OS 16 [1.0]
    # 70.71% (val) / OS 8 [0.75:0.25:1.25] flip 73.57% (val), 23MB.
    Entry(
        name="tf:mobilenetv2_coco_cityscapes_trainfine", kind="segmentation",
        format="tf_zoo_tarball", **_tf("deeplabv3_mnv2_cityscapes_train_2018_02_05.tar.gz"),
        arch="deeplabv3_mobilenetv2", dataset="ImageNet, MS-COCO, then Cityscapes train_fine",
        classes="19 Cityscapes train ids", num_classes=19, preprocessing=_TF_PRE, size_mb=23,
        build={"output_stride": 16},
        metrics=(Metric("mIoU", 70.71, _CS_VAL, *_CS_OS16), Metric("mIoU", 73.57, _CS_VAL, *_CS_MS)),
        license=_TF_LICENSE, source=_ZOO + ", Cityscapes table", unknown=_TF_NO_PARAMS,
    ),
    # model_zoo.md, "DeepLab models trained on ADE20K": xception65_ade20k_train, URL, OS 8
    # [0.5:0.25:1.75] flip, 45.65% mIoU / 82.52% pixel accuracy (val), 439MB, inputs resized
    # so that the longest side is 513; 151 outputs (data_generator.py, see tf_deeplab).
    Entry(
        name="tf:xception65_ade20k_train", kind="segmentation", format="tf_zoo_tarball",
        **_tf("deeplabv3_xception_ade20k_train_2018_05_29.tar.gz"),
        arch="deeplabv3plus_xception65", dataset="ImageNet, then ADE20K train",
        classes="151: 'other' (ignored in training) + the 150 ADE20K classes", num_classes=151,
        preprocessing=_TF_PRE, size_mb=439, build={"output_stride": 8},
        metrics=(Metric("mIoU", 45.65, "ADE20K val", *_ADE_MS),
                 Metric("pixel accuracy", 82.52, "ADE20K val", *_ADE_MS)),
        license=_TF_LICENSE, source=_ZOO + ", ADE20K table", unknown=_TF_NO_PARAMS,
        notes=_MS_ONLY,
    ),
    # torchvision ResNet50_Weights.IMAGENET1K_V1 (resnet.py): URL, num_params 25557032,
    # acc@1 76.130 / acc@5 92.862, _file_size 97.781; the V1 weights are the ones
    # torchvision's deeplabv3_resnet50 starts from (weights_backbone default).
    Entry(
        name="torchvision:resnet50_imagenet", kind="backbone", format="imagenet_pth",
        urls=_tv("resnet50-0676ba61.pth"), sha256_prefix="0676ba61", arch="resnet50",
        dataset="ImageNet-1K", classes="1000 ImageNet classes (classifier ignored)",
        preprocessing=_TV_IMAGENET_PRE, num_params=25557032, size_mb=97.781,
        metrics=(Metric("top-1", 76.130, "ImageNet-1K val", _TV_IMAGENET_EVAL),
                 Metric("top-5", 92.862, "ImageNet-1K val", _TV_IMAGENET_EVAL)),
        license=_TV_LICENSE, source="pytorch/vision torchvision/models/resnet.py, ResNet50_Weights.IMAGENET1K_V1",
    ),
    # torchvision ResNet101_Weights.IMAGENET1K_V1 (resnet.py): URL, num_params 44549160,
    # acc@1 77.374 / acc@5 93.546, _file_size 170.511.
    Entry(
        name="torchvision:resnet101_imagenet", kind="backbone", format="imagenet_pth",
        urls=_tv("resnet101-63fe2227.pth"), sha256_prefix="63fe2227", arch="resnet101",
        dataset="ImageNet-1K", classes="1000 ImageNet classes (classifier ignored)",
        preprocessing=_TV_IMAGENET_PRE, num_params=44549160, size_mb=170.511,
        metrics=(Metric("top-1", 77.374, "ImageNet-1K val", _TV_IMAGENET_EVAL),
                 Metric("top-5", 93.546, "ImageNet-1K val", _TV_IMAGENET_EVAL)),
        license=_TV_LICENSE, source="pytorch/vision torchvision/models/resnet.py, ResNet101_Weights.IMAGENET1K_V1",
    ),
    # torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (mobilenetv2.py): URL, num_params
    # 3504872, acc@1 71.878 / acc@5 90.286, _file_size 13.555.
    Entry(
        name="torchvision:mobilenet_v2_imagenet", kind="backbone", format="imagenet_pth",
        urls=_tv("mobilenet_v2-b0353104.pth"), sha256_prefix="b0353104", arch="mobilenetv2",
        dataset="ImageNet-1K", classes="1000 ImageNet classes (classifier ignored)",
        preprocessing=_TV_IMAGENET_PRE, num_params=3504872, size_mb=13.555,
        metrics=(Metric("top-1", 71.878, "ImageNet-1K val", _TV_IMAGENET_EVAL),
                 Metric("top-5", 90.286, "ImageNet-1K val", _TV_IMAGENET_EVAL)),
        license=_TV_LICENSE,
        source="pytorch/vision torchvision/models/mobilenetv2.py, MobileNet_V2_Weights.IMAGENET1K_V1",
    ),
    # torchvision MobileNet_V3_Large_Weights.IMAGENET1K_V1 (mobilenetv3.py): URL, num_params
    # 5483032, acc@1 74.042 / acc@5 91.340, _file_size 21.114; the weights torchvision's
    # deeplabv3_mobilenet_v3_large starts from.
    Entry(
        name="torchvision:mobilenet_v3_large_imagenet", kind="backbone", format="imagenet_pth",
        urls=_tv("mobilenet_v3_large-8738ca79.pth"), sha256_prefix="8738ca79",
        arch="mobilenetv3_large", dataset="ImageNet-1K",
        classes="1000 ImageNet classes (classifier ignored)", preprocessing=_TV_IMAGENET_PRE,
        num_params=5483032, size_mb=21.114,
        metrics=(Metric("top-1", 74.042, "ImageNet-1K val", _TV_IMAGENET_EVAL),
                 Metric("top-5", 91.340, "ImageNet-1K val", _TV_IMAGENET_EVAL)),
        license=_TV_LICENSE,
        source="pytorch/vision torchvision/models/mobilenetv3.py, MobileNet_V3_Large_Weights.IMAGENET1K_V1",
    ),
    # torchvision VGG16_Weights.IMAGENET1K_V1 (vgg.py): URL, num_params 138357544, acc@1
    # 71.592 / acc@5 90.382, _file_size 527.796.
    Entry(
        name="torchvision:vgg16_imagenet", kind="backbone", format="imagenet_pth",
        urls=_tv("vgg16-397923af.pth"), sha256_prefix="397923af", arch="vgg16",
        dataset="ImageNet-1K", classes="1000 ImageNet classes (classifier ignored)",
        preprocessing=_TV_IMAGENET_PRE, num_params=138357544, size_mb=527.796,
        metrics=(Metric("top-1", 71.592, "ImageNet-1K val", _TV_IMAGENET_EVAL),
                 Metric("top-5", 90.382, "ImageNet-1K val", _TV_IMAGENET_EVAL)),
        license=_TV_LICENSE, source="pytorch/vision torchvision/models/vgg.py, VGG16_Weights.IMAGENET1K_V1",
        notes="conv weights only: DeepLab v1's fc6/fc7 (LargeFOV) start from scratch here",
    ),
    # model_zoo.md, "Checkpoints pretrained on ImageNet": xception_65_imagenet, URL, 447MB.
    Entry(
        name="tf:xception65_imagenet", kind="backbone", format="tf_imagenet",
        **_tf("deeplabv3_xception_2018_01_04.tar.gz"), arch="xception65", dataset="ImageNet",
        classes="ImageNet classes (no DeepLab head)", preprocessing=_TF_PRE, size_mb=447,
        metrics=(), license=_TF_LICENSE, source=_ZOO + ", ImageNet table",
        unknown="accuracy and its protocol (model_zoo.md reports none); " + _TF_NO_PARAMS,
    ),
    # model_zoo.md, ImageNet table: resnet_v1_50_beta_imagenet, URL, 274MB; "replacing the
    # first 7x7 convolution with three 3x3 convolutions".
    Entry(
        name="tf:resnet_v1_50_beta_imagenet", kind="backbone", format="tf_imagenet",
        **_tf("resnet_v1_50_2018_05_04.tar.gz"), arch="resnet50_beta", dataset="ImageNet",
        classes="ImageNet classes (no DeepLab head)", preprocessing=_TF_PRE, size_mb=274,
        metrics=(), license=_TF_LICENSE, source=_ZOO + ", ImageNet table",
        unknown="accuracy and its protocol (model_zoo.md reports none); " + _TF_NO_PARAMS,
    ),
    # model_zoo.md, ImageNet table: resnet_v1_101_beta_imagenet, URL, 477MB.
    Entry(
        name="tf:resnet_v1_101_beta_imagenet", kind="backbone", format="tf_imagenet",
        **_tf("resnet_v1_101_2018_05_04.tar.gz"), arch="resnet101_beta", dataset="ImageNet",
        classes="ImageNet classes (no DeepLab head)", preprocessing=_TF_PRE, size_mb=477,
        metrics=(), license=_TF_LICENSE, source=_ZOO + ", ImageNet table",
        unknown="accuracy and its protocol (model_zoo.md reports none); " + _TF_NO_PARAMS,
    ),
)  # fmt: skip

_BY_NAME = {e.name: e for e in ENTRIES}
# The ImageNet entry each atrous backbone starts from with ``pretrained_backbone: imagenet``.
IMAGENET = {e.arch: e.name for e in ENTRIES if e.kind == "backbone"}
NAMESPACES = tuple(sorted({e.name.split(":", 1)[0] for e in ENTRIES}))


def list_weights(kind: str | None = None) -> list[str]:
    """The registry's names, in table order (``kind``: ``segmentation`` or ``backbone``)."""
    return [e.name for e in ENTRIES if kind is None or e.kind == kind]


def looks_like_name(text: str) -> bool:
    """Whether ``text`` is written as a registry name (``<source>:<name>``, no path parts)."""
    ns, sep, rest = text.partition(":")
    return bool(sep) and ns in NAMESPACES and bool(rest) and "/" not in rest


def get_weights(name: str | Entry) -> Entry:
    """The entry called ``name`` (also without its ``source:`` prefix, when that is unique).
    Raises :class:`CheckpointError` with the closest names for an unknown one."""
    if isinstance(name, Entry):
        return name
    if name in _BY_NAME:
        return _BY_NAME[name]
    bare = [e for e in ENTRIES if e.name.split(":", 1)[1] == name]
    if len(bare) == 1:
        return bare[0]
    close = difflib.get_close_matches(name, list(_BY_NAME), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise CheckpointError(
        f"{name!r}: no such weights file or registry name{hint} (atrous weights list)"
    )


# The dataset a segmentation entry's classes come from, by class count (what weights="voc"
# and the like name; torchvision's COCO models predict VOC's 21 classes).
DATASET_TAGS = {21: "voc", 19: "cityscapes", 151: "ade20k"}


def weights_for(arch: str, weights: str | Entry) -> Entry:
    """The segmentation entry that ``weights`` names for model ``arch``: a registry name or
    entry, ``"DEFAULT"`` (the arch's first row), or a dataset tag (``"voc"``, ``"cityscapes"``,
    ``"ade20k"``: the arch's first row with that dataset's classes)."""
    mine = [e for e in ENTRIES if e.kind == "segmentation" and e.arch == arch]
    tag = weights.lower() if isinstance(weights, str) else None
    if tag == "default" or tag in DATASET_TAGS.values():
        found = [e for e in mine if tag == "default" or DATASET_TAGS.get(e.num_classes) == tag]
        if not found:
            have = ", ".join(e.name for e in mine) or "none"
            raise CheckpointError(
                f"no {weights!r} weights for {arch} in the registry (it has: {have})"
            )
        return found[0]
    entry = get_weights(weights)
    if entry.arch != arch:
        raise CheckpointError(f"{entry.name} holds a {entry.arch}, not a {arch}")
    return entry


def imagenet_weights(backbone: str) -> Entry:
    """The ImageNet entry for an atrous backbone (``resnet50``, ``xception65``, ...)."""
    if backbone not in IMAGENET:
        raise CheckpointError(f"no ImageNet weights in the registry for backbone {backbone!r}")
    return _BY_NAME[IMAGENET[backbone]]
