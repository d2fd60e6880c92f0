"""Editing an ONNX graph in place: producer / consumer look-ups, new initializers and nodes, clean-up.

Used by the export's graph rewrites for ONNX Runtime (`channels_last_flatten`, `int8_channel_padding`,
`int8_early_quantize`, `int8_deconv_lowering`): a rewrite checks a pattern with the look-ups, queues its
new nodes with `insert_before`, then `commit` places them (the graph stays topologically sorted) and drops
the DequantizeLinear nodes and initializers nothing reads any more. Node names must be unique (the dynamo
exporter's are).
"""
import logging
from typing import Dict, List, Optional

import numpy as np


class GraphEditor:
    """Producer / consumer look-ups and initializer helpers over one onnx GraphProto."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.to_array = numpy_helper.to_array
        self.from_array = numpy_helper.from_array
        self.inits = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.producer, self.consumers = {}, {}
        for node in graph.node:
            for o in node.output:
                self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)
        self._count = 0
        self.taken = set(self.inits) | set(self.producer) | {n.name for n in graph.node} | {
            i.name for i in graph.input}
        self.pending: Dict[str, List] = {}  # node name -> new nodes to place right before it
        self.removed = set()  # names of nodes to drop at commit

    def insert_before(self, node, new_node) -> None:
        self.pending.setdefault(node.name, []).append(new_node)

    def remove(self, node) -> None:
        self.removed.add(node.name)

    def array(self, name: str) -> Optional[np.ndarray]:
        return self.to_array(self.inits[name]) if name in self.inits else None

    def only_consumers(self, tensor: str) -> List:
        """The nodes reading `tensor`; none if it is a graph output (its readers are then not all known)."""
        return [] if tensor in self.outputs else self.consumers.get(tensor, [])

    def single_consumer(self, tensor: str):
        users = self.only_consumers(tensor)
        return users[0] if len(users) == 1 else None

    def padded(self, name: str, axis: int, size: int, fill) -> str:
        """Name of an initializer holding `name` padded along `axis` to `size` with `fill` (made once)."""
        new_name = f"{name}_pad{axis}_{size}" + (f"_fill{fill:g}" if fill else "")
        if new_name not in self.inits:
            arr = self.array(name)
            pad = [(0, 0)] * arr.ndim
            pad[axis] = (0, size - arr.shape[axis])
            new = self.from_array(np.pad(arr, pad, constant_values=np.array(fill).astype(arr.dtype)), new_name)
            self.graph.initializer.append(new)
            self.inits[new_name] = new
        return new_name

    def unique(self, stem: str) -> str:
        """A node / tensor name not used in the graph yet."""
        while True:
            self._count += 1
            name = f"{stem}_x{self._count}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    @staticmethod
    def attr(node, name: str, default=None):
        from onnx import helper

        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    @staticmethod
    def set_int_attr(node, name: str, value: int) -> None:
        for a in node.attribute:
            if a.name == name:
                a.i = value
                return
        from onnx import helper

        node.attribute.append(helper.make_attribute(name, value))

    def int8_weight(self, tensor: str):
        """(DequantizeLinear node, int8 weight, scale, zero point) if `tensor` is a symmetric int8 weight:
        DequantizeLinear of an int8 initializer with constant scale and all-zero zero points."""
        dq = self.producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
            return None
        w, scale, zp = (self.array(n) for n in dq.input[:3])
        if w is None or scale is None or zp is None or w.dtype != np.int8 or np.any(zp != 0):
            return None
        return dq, w, scale, zp

    def per_tensor_dq(self, tensor: str):
        """The DequantizeLinear producing `tensor` with a constant scalar scale and zero point, if any."""
        dq = self.producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
            return None
        scale = self.array(dq.input[1])
        return dq if scale is not None and scale.ndim == 0 and self.array(dq.input[2]) is not None else None

    def add_initializer(self, array: np.ndarray, stem: str) -> str:
        name = self.unique(stem)
        init = self.from_array(np.asarray(array), name)
        self.graph.initializer.append(init)
        self.inits[name] = init
        return name

    def commit(self) -> None:
        commit(self)


def used_names(graph, names: set) -> set:
    """Every tensor name read by a node of `graph` or of its sub-graphs (If / Loop bodies)."""
    for node in graph.node:
        names.update(i for i in node.input if i)
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                used_names(sub, names)
    return names


def commit(g: GraphEditor) -> None:
    """Place the queued nodes before the nodes they were queued for, then drop the DequantizeLinear nodes and
    initializers nothing reads any more."""
    from onnx import NodeProto

    ordered = []
    for node in g.graph.node:
        for new in g.pending.get(node.name, []) + ([] if node.name in g.removed else [node]):
            copy = NodeProto()
            copy.CopyFrom(new)
            ordered.append(copy)
    g.pending.clear()
    g.removed.clear()
    while True:
        used = _names_read_by(ordered, g.graph)
        kept = [n for n in ordered if n.op_type != "DequantizeLinear" or any(o in used for o in n.output)]
        if len(kept) == len(ordered):
            break
        ordered = kept
    del g.graph.node[:]
    g.graph.node.extend(ordered)
    used = used_names(g.graph, {o.name for o in g.graph.output})
    live = [t for t in g.graph.initializer if t.name in used]
    del g.graph.initializer[:]
    g.graph.initializer.extend(live)


def _names_read_by(nodes, graph) -> set:
    from onnx import GraphProto

    tmp = GraphProto()
    tmp.node.extend(nodes)
    return used_names(tmp, {o.name for o in graph.output})


def nodes_uniquely_named(graph) -> bool:
    names = [n.name for n in graph.node]
    return all(names) and len(set(names)) == len(names)


def rewrite_each(model, op_type: str, rewrite, what: str) -> int:
    """Run `rewrite(editor, node) -> bool` on every `op_type` node of the default domain with one editor,
    commit, and count the rewritten nodes (for rewrites that do not depend on one another)."""
    if not nodes_uniquely_named(model.graph):
        logging.getLogger(__name__).warning("%s skipped: the graph's nodes are not uniquely named", what)
        return 0
    g = GraphEditor(model.graph)
    nodes = [n for n in model.graph.node if n.op_type == op_type and n.domain in ("", "ai.onnx")]
    done = sum(bool(rewrite(g, n)) for n in nodes)
    if done:
        g.commit()
    return done
