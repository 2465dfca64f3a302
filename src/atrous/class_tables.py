"""Class names and colour palettes of the datasets the DeepLab papers report on: Pascal VOC,
Cityscapes, ADE20K and CamVid.

Plain tables at the bottom layer, read by the datasets (:mod:`atrous.data`), by the weights
that carry a dataset's classes (:mod:`atrous.weights`' TF model zoo and registry) and by every
drawing. Every palette is a ``(num_classes, 3)`` uint8 array indexed by *train id* (the label
the loss sees); the ignore index 255 has no entry.
"""

from __future__ import annotations

import numpy as np


def voc_colormap(n: int = 256) -> np.ndarray:
    """The Pascal VOC palette: bits of the class index interleaved into R, G, B (VOC devkit)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_PALETTE = voc_colormap(256)[: len(VOC_CLASSES)]

# Cityscapes (cityscapesScripts labels.py): the 19 evaluated classes in train-id order, as
# (name, labelId, colour).
_CITYSCAPES: tuple[tuple[str, int, tuple[int, int, int]], ...] = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(name for name, _, _ in _CITYSCAPES)
# labelId -> trainId: the labelId of each train id.
CITYSCAPES_LABEL_IDS: tuple[int, ...] = tuple(label_id for _, label_id, _ in _CITYSCAPES)
CITYSCAPES_PALETTE = np.array([colour for _, _, colour in _CITYSCAPES], dtype=np.uint8)

# CamVid, the 11-class version of SegNet (Badrinarayanan et al.); raw label 11 is void.
# (name, colour) in train-id order.
_CAMVID: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("sky", (128, 128, 128)),
    ("building", (128, 0, 0)),
    ("pole", (192, 192, 128)),
    ("road", (128, 64, 128)),
    ("pavement", (60, 40, 222)),
    ("tree", (128, 128, 0)),
    ("sign-symbol", (192, 128, 128)),
    ("fence", (64, 64, 128)),
    ("car", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)),
    ("bicyclist", (0, 128, 192)),
)
CAMVID_CLASSES: tuple[str, ...] = tuple(name for name, _ in _CAMVID)
CAMVID_PALETTE = np.array([colour for _, colour in _CAMVID], dtype=np.uint8)

# ADE20K SceneParsing (objectInfo150.txt, "Name" column), index i = train id i = raw label i + 1.
ADE20K_FULL_NAMES: tuple[str, ...] = (
    "wall",
    "building, edifice",
    "sky",
    "floor, flooring",
    "tree",
    "ceiling",
    "road, route",
    "bed",
    "windowpane, window",
    "grass",
    "cabinet",
    "sidewalk, pavement",
    "person, individual, someone, somebody, mortal, soul",
    "earth, ground",
    "door, double door",
    "table",
    "mountain, mount",
    "plant, flora, plant life",
    "curtain, drape, drapery, mantle, pall",
    "chair",
    "car, auto, automobile, machine, motorcar",
    "water",
    "painting, picture",
    "sofa, couch, lounge",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug, carpet, carpeting",
    "field",
    "armchair",
    "seat",
    "fence, fencing",
    "desk",
    "rock, stone",
    "wardrobe, closet, press",
    "lamp",
    "bathtub, bathing tub, bath, tub",
    "railing, rail",
    "cushion",
    "base, pedestal, stand",
    "box",
    "column, pillar",
    "signboard, sign",
    "chest of drawers, chest, bureau, dresser",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace, hearth, open fireplace",
    "refrigerator, icebox",
    "grandstand, covered stand",
    "path",
    "stairs, steps",
    "runway",
    "case, display case, showcase, vitrine",
    "pool table, billiard table, snooker table",
    "pillow",
    "screen door, screen",
    "stairway, staircase",
    "river",
    "bridge, span",
    "bookcase",
    "blind, screen",
    "coffee table, cocktail table",
    "toilet, can, commode, crapper, pot, potty, stool, throne",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove, kitchen stove, range, kitchen range, cooking stove",
    "palm, palm tree",
    "kitchen island",
    "computer, computing machine, computing device, data processor, electronic computer, information processing system",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel, hut, hutch, shack, shanty",
    "bus, autobus, coach, charabanc, double-decker, jitney, motorbus, motorcoach, omnibus, passenger vehicle",
    "towel",
    "light, light source",
    "truck, motortruck",
    "tower",
    "chandelier, pendant, pendent",
    "awning, sunshade, sunblind",
    "streetlight, street lamp",
    "booth, cubicle, stall, kiosk",
    "television, television receiver, television set, tv, tv set, idiot box, boob tube, telly, goggle box",
    "airplane, aeroplane, plane",
    "dirt track",
    "apparel, wearing apparel, dress, clothes",
    "pole",
    "land, ground, soil",
    "bannister, banister, balustrade, balusters, handrail",
    "escalator, moving staircase, moving stairway",
    "ottoman, pouf, pouffe, puff, hassock",
    "bottle",
    "buffet, counter, sideboard",
    "poster, posting, placard, notice, bill, card",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt, conveyor belt, conveyer, conveyor, transporter",
    "canopy",
    "washer, automatic washer, washing machine",
    "plaything, toy",
    "swimming pool, swimming bath, natatorium",
    "stool",
    "barrel, cask",
    "basket, handbasket",
    "waterfall, falls",
    "tent, collapsible shelter",
    "bag",
    "minibike, motorbike",
    "cradle",
    "oven",
    "ball",
    "food, solid food",
    "step, stair",
    "tank, storage tank",
    "trade name, brand name, brand, marque",
    "microwave, microwave oven",
    "pot, flowerpot",
    "animal, animate being, beast, brute, creature, fauna",
    "bicycle, bike, wheel, cycle",
    "lake",
    "dishwasher, dish washer, dishwashing machine",
    "screen, silver screen, projection screen",
    "blanket, cover",
    "sculpture",
    "hood, exhaust hood",
    "sconce",
    "vase",
    "traffic light, traffic signal, stoplight",
    "tray",
    "ashcan, trash can, garbage can, wastebin, ash bin, ash-bin, ashbin, dustbin, trash barrel, trash bin",
    "fan",
    "pier, wharf, wharfage, dock",
    "crt screen",
    "plate",
    "monitor, monitoring device",
    "bulletin board, notice board",
    "shower",
    "radiator",
    "glass, drinking glass",
    "clock",
    "flag",
)
# The colours the SceneParsing toolkit and most libraries draw ADE20K with, as RGB hex.
_ADE20K_PALETTE_HEX = (
    "787878b4787806e6e650323204c8037878508c8c8ccc05ffe6e6e604fa07e005ffebff0796053d78784608ff33"
    "ff06528fff8cccff04ff3307cc46030066c83de6faff06330b66ffff0747ff09e00907e6dcdcdcff095c7009ff"
    "08ffd607ffe0ffb8060aff47ff290a07ffffe0ff086608ffff3d06ffc207ff7a0800ff14ff0829ff05990633ff"
    "eb0cffa0961400a3ff8c8c8cfa0a0f14ff001fff00ff1f00ffe00099ff000000ffff470000ebff00adff1f00ff"
    "0bc8c8ff520000fff5003dff00ff7000ff85ff0000ffa300ff6600c2ff00008fff33ff000052ff00ff2900ffad"
    "0a00ffadff0000ff99ff5c00ff00ffff00f5ff0066ffad00ff0014ffb8b8001fff00ff3d0047ffff00cc00ffc2"
    "00ff52000aff0070ff3300ff00c2ff007aff00ffa3ff990000ff0aff70008fff005200ffa3ff00ffeb0008b8aa"
    "8500ff00ff5cb800ffff001f00b8ff00d6ffff00705cff0000e0ff70e0ff46b8a0a300ff9900ff47ff00ff00a3"
    "ffcc00ff008f00ffeb85ff00ff00ebf500ffff007afff5000abed4d6ff0000ccff1400ffffff000099ff0029ff"
    "00ffcc2900ff29ff00ad00ff00f5ff4700ff7a00ff00ffb8005cffb8ff000085ffffd60019c2c266ff005c00ff"
)
# Short names (first synonym), the names results tables use.
ADE20K_CLASSES: tuple[str, ...] = tuple(n.split(",")[0].strip() for n in ADE20K_FULL_NAMES)
ADE20K_PALETTE = np.frombuffer(bytes.fromhex("".join(_ADE20K_PALETTE_HEX)), np.uint8).reshape(-1, 3)
