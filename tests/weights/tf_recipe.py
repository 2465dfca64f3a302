"""The values in the tf_deeplab checkpoints: a pure function of each variable's name and shape.

A copy of ``shared/reference/tf_deeplab/tf_recipe.py`` (the reference fixtures' value rule,
README.md there), kept here so that tests can rebuild the TF checkpoints' weights without
``../shared``; ``test_tf_checkpoint.py`` checks it against the small fixture, and the test of
the zoo tarballs against the original where ``../shared`` exists.

Self-contained (numpy + zlib), so a test can rebuild any tensor of the big checkpoints
without TensorFlow and without the tarballs. README.md states the same rule in words.

    u(name, n)[i] = T[(i + o) % P],  o = crc32(name) % P,  T = uniform(P, SEED), P = 7919

T is one fixed table of P splitmix64 draws in [0, 1), so every tensor is a rotation of the
same period-P sequence: a full-size checkpoint compresses ~50-100x in a .tar.gz, yet two
variables of the same shape still hold different values (different o), which catches
transposed or swapped weights. Values are computed in float64 and rounded once to the
variable's dtype (C order, TF layouts: conv [kh, kw, cin, cout], depthwise [kh, kw, cin, mult]).
"""

import zlib

import numpy as np

P = 7919  # prime period of the value table
# The seed of the table used for shared/reference/tf_deeplab (the held-out bar uses another).
SEED = 0x7F0D
GLOBAL_STEP = 30000

_TABLES = {}


def uniform(n: int, seed: int) -> np.ndarray:
    """n floats in [0, 1) from splitmix64 over (seed + i), float64 (as weights_recipe.py)."""
    with np.errstate(over="ignore"):
        z = (np.arange(n, dtype=np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def table(seed: int = SEED) -> np.ndarray:
    if seed not in _TABLES:
        _TABLES[seed] = uniform(P, seed)
    return _TABLES[seed]


def raw(name: str, n: int, seed: int = SEED) -> np.ndarray:
    """The n draws u[0..n) of variable `name` (float64 in [0, 1))."""
    o = zlib.crc32(name.encode()) % P
    return table(seed)[(np.arange(n, dtype=np.int64) + o) % P]


def leaf(name: str) -> str:
    """The last component of a variable name ('xception_65/.../BatchNorm/gamma' -> 'gamma')."""
    return name.rsplit("/", 1)[-1]


def value(name: str, shape, dtype="float32", seed: int = SEED) -> np.ndarray:
    """The tensor stored under `name` with TF shape `shape` and numpy dtype `dtype`.

    By the name's last component (and rank where it matters), u from raw():
      global_step                      : 30000 (whatever the dtype, normally int64)
      weights, rank 4 [kh,kw,cin,cout] : (2u - 1) * sqrt(6 / (kh*kw*cin))
      depthwise_weights [kh,kw,cin,m]  : (2u - 1) * sqrt(6 / (kh*kw))
      pointwise_weights [1,1,cin,cout] : (2u - 1) * sqrt(6 / cin)
      biases                           : (u - 0.5) * 0.2
      gamma                            : 0.5 + 0.5u
      beta, moving_mean                : (u - 0.5) * 0.2
      moving_variance                  : 0.5 + u
      anything else, float dtype       : (u - 0.5) * 0.2  (e.g. optimizer slots '.../Momentum',
                                                          weights of another rank)
      anything else, integer dtype     : floor(u * 65536) - 32768
    """
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) if shape else 1
    last = leaf(name)
    if last == "global_step":
        return np.full(shape, GLOBAL_STEP, dtype=dtype)
    u = raw(name, n, seed)
    if last == "weights" and len(shape) == 4:
        v = (2.0 * u - 1.0) * np.sqrt(6.0 / (shape[0] * shape[1] * shape[2]))
    elif last == "depthwise_weights" and len(shape) == 4:
        v = (2.0 * u - 1.0) * np.sqrt(6.0 / (shape[0] * shape[1]))
    elif last == "pointwise_weights" and len(shape) == 4:
        v = (2.0 * u - 1.0) * np.sqrt(6.0 / shape[2])
    elif last == "gamma":
        v = 0.5 + 0.5 * u
    elif last == "moving_variance":
        v = 0.5 + u
    elif np.issubdtype(dtype, np.integer):
        v = np.floor(u * 65536.0) - 32768.0
    else:  # biases, beta, moving_mean and anything else
        v = (u - 0.5) * 0.2
    return v.reshape(shape).astype(dtype)


def image(height: int, width: int, seed: int = 1) -> np.ndarray:
    """The uint8 RGB (H, W, 3) test image: a smooth gradient plus a splitmix64 texture.

    r = 255*x, g = 255*y, b = 255*(1-x*y) on the unit square (x along width), each channel
    0.7*gradient + 0.3*texture with texture = 255*uniform(H*W*3, seed), rounded half up.
    """
    y = (np.arange(height, dtype=np.float64) / max(height - 1, 1))[:, None]
    x = (np.arange(width, dtype=np.float64) / max(width - 1, 1))[None, :]
    grad = np.stack(np.broadcast_arrays(255.0 * x, 255.0 * y, 255.0 * (1.0 - x * y)), axis=-1)
    tex = 255.0 * uniform(height * width * 3, seed).reshape(height, width, 3)
    return np.floor(0.7 * grad + 0.3 * tex + 0.5).clip(0, 255).astype(np.uint8)
