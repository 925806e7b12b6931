"""The EfficientNet-Lite0 graph, written from its weights, with no torch at run time or
at first use: the ``.pth`` file (torch's legacy pickle format)
is read by a restricted unpickler that knows only the four names a state dict needs,
each batch norm is folded into the convolution before it, and the graph is written with
``onnx``'s helpers: stem, 16 inverted-residual blocks (no squeeze-excite), head,
ReLU6 throughout, TensorFlow "SAME" padding (the extra pixel at the bottom and right)
made explicit for 224 px, batch-norm eps 1e-3. The graph is built once and cached as
``<cache_dir>/efficientnet-lite0-<weights sha256[:16]>-g<GRAPH_VERSION>.onnx`` with a
``.sha256`` file beside it; a cache file that fails its digest or does not load is
rebuilt. Nothing here touches the network.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from ..vectors import EMBEDDING_DIMENSION

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DIMENSION",
    "GRAPH_VERSION",
    "IMAGE_SIZE",
    "WEIGHTS_SHA256",
    "build_graph",
    "read_state_dict",
    "same_pads",
]

DIMENSION: Final = EMBEDDING_DIMENSION
IMAGE_SIZE: Final = 224
GRAPH_VERSION: Final = 1  # bump whenever build_graph's output changes
WEIGHTS_SHA256: Final = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
BN_EPS: Final = 1e-3
# EfficientNet-Lite0 stages (lukemelas' block strings r*_k*_s*_e*_i*_o*, SE removed):
# (repeats, kernel, stride, expansion, input channels, output channels).
STAGES: Final = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


Array = npt.NDArray[Any]


# --- the weights: torch's legacy pickle format, read without torch -------------------

_STORAGES: Final = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}
_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C


class _Rebuild:
    """Stands for ``torch._utils._rebuild_tensor_v2``: records how to view a storage."""

    def __init__(
        self,
        storage: tuple[str, str],
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        *_: object,
    ) -> None:
        self.key, self.dtype = storage
        self.offset, self.size, self.stride = offset, tuple(size), tuple(stride)


class _StateDictUnpickler(pickle.Unpickler):
    """Allows exactly the globals a plain state dict uses; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Rebuild
        if module == "torch" and name in _STORAGES:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("unexpected persistent id in a weights file")
        _, storage_type, key, _location, _numel, *view = pid
        if storage_type not in _STORAGES or (view and view[0] is not None):
            raise pickle.UnpicklingError("unsupported storage in a weights file")
        return (str(key), storage_type)


def read_state_dict(data: bytes) -> dict[str, Array]:
    """The tensors of a state dict saved by ``torch.save`` (legacy, non-zip format)."""
    stream = io.BytesIO(data)
    try:
        header = [_plain_load(stream) for _ in range(3)]
        if header[0] != _LEGACY_MAGIC or header[1] != 1001 or not header[2]["little_endian"]:
            raise ValueError("not a little-endian legacy torch file")
        tree = _StateDictUnpickler(stream).load()
        keys = _plain_load(stream)
        storages: dict[str, Array] = {}
        types = {r.key: r.dtype for r in tree.values() if isinstance(r, _Rebuild)}
        for key in keys:
            dtype = np.dtype(_STORAGES[types[key]]).newbyteorder("<")
            (count,) = struct.unpack("<q", stream.read(8))
            raw = stream.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise ValueError("truncated storage")
            storages[key] = np.frombuffer(raw, dtype)
        tensors = {}
        for name, r in tree.items():
            flat = storages[r.key]
            strides = tuple(s * flat.itemsize for s in r.stride)
            view = np.lib.stride_tricks.as_strided(flat[r.offset :], r.size, strides)
            tensors[name] = np.ascontiguousarray(view, dtype=flat.dtype.newbyteorder("="))
    except (
        pickle.UnpicklingError,
        ValueError,
        KeyError,
        AttributeError,
        TypeError,
        struct.error,
        EOFError,
    ) as error:
        raise ConfigError(f"cannot read the EfficientNet weights: {error}") from None
    return tensors


def _plain_load(stream: io.BytesIO) -> Any:
    """One pickle of plain data (the file's header and storage list): no globals."""

    class Plain(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    return Plain(stream).load()


# --- the graph -----------------------------------------------------------------------


def same_pads(size: int, kernel: int, stride: int) -> tuple[list[int], int]:
    """TensorFlow "SAME" for a square input: ONNX pads [top, left, bottom, right]."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2
    return [before, before, total - before, total - before], out


def build_graph(weights: dict[str, Array]) -> onnx.ModelProto:
    """The ONNX model: input ``image`` (n, 3, 224, 224) float32, preprocessed; outputs
    ``features`` (n, 1280), the pooled head before L2 normalisation, and ``logits``
    (n, 1000), the ImageNet-1k classifier."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
    ]
    used: set[str] = set()

    def conv_bn(
        x: str, conv: str, bn: str, size: int, stride: int, groups: int = 1, relu6: bool = True
    ) -> tuple[str, int]:
        w = weights[f"{conv}.weight"].astype(np.float64)
        gamma, beta = weights[f"{bn}.weight"], weights[f"{bn}.bias"]
        mean, var = weights[f"{bn}.running_mean"], weights[f"{bn}.running_var"]
        used.update([f"{conv}.weight", *(f"{bn}.{k}" for k in _BN_KEYS)])
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
        folded_w = (w * scale[:, None, None, None]).astype(np.float32)
        folded_b = (beta - mean * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(folded_w, f"{conv}.w"))
        inits.append(numpy_helper.from_array(folded_b, f"{conv}.b"))
        kernel = w.shape[-1]
        pads, out = same_pads(size, kernel, stride)
        y = f"{conv}.out"
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{conv}.w", f"{conv}.b"],
                [y],
                name=conv,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=pads,
                group=groups,
            )
        )
        if relu6:
            nodes.append(helper.make_node("Clip", [y, "zero", "six"], [f"{y}.r6"]))
            y = f"{y}.r6"
        return y, out

    x, size = conv_bn("image", "_conv_stem", "_bn0", IMAGE_SIZE, 2)
    index = 0
    for repeats, kernel, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            block_in, inner = x, (cin if r == 0 else cout) * expand
            p = f"_blocks.{index}"
            if expand != 1:
                x, _ = conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", size, 1)
            step = stride if r == 0 else 1
            x, out = conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", size, step, inner)
            x, _ = conv_bn(x, f"{p}._project_conv", f"{p}._bn2", out, 1, relu6=False)
            if r > 0:  # stride 1 and equal channel counts: the identity skip
                nodes.append(helper.make_node("Add", [x, block_in], [f"{p}.sum"]))
                x = f"{p}.sum"
            size = out
            if weights[f"{p}._depthwise_conv.weight"].shape[-1] != kernel:
                raise ConfigError(f"unexpected kernel size in {p}")
            index += 1
    x, _ = conv_bn(x, "_conv_head", "_bn1", size, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    inits.append(numpy_helper.from_array(weights["_fc.weight"].astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array(weights["_fc.bias"].astype(np.float32), "fc.b"))
    used.update(("_fc.weight", "_fc.bias"))
    nodes.append(helper.make_node("Gemm", ["features", "fc.w", "fc.b"], ["logits"], transB=1))
    unused = {k for k in weights if not k.endswith("num_batches_tracked")} - used
    if unused:
        raise ConfigError(f"the weights hold tensors the graph does not use: {sorted(unused)}")

    graph = helper.make_graph(
        nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, *[IMAGE_SIZE] * 2])],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", DIMENSION]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 1000]),
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lookalike"
    )
    model.ir_version = 8  # readable by onnxruntime 1.14 and later
    helper.set_model_props(model, {"weights_sha256": WEIGHTS_SHA256, "graph": str(GRAPH_VERSION)})
    onnx.checker.check_model(model, full_check=True)
    return model


_BN_KEYS: Final = ("weight", "bias", "running_mean", "running_var")
