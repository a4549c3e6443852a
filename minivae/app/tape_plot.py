"""A tape (``minivae.tape.Tape``) drawn as a picture with matplotlib, and written as a DOT file for graphviz.

The picture runs top to bottom in the order of the forward pass: each
operation sits one row below the lowest of the operations it reads, and each
leaf (parameter, data, noise, constant) beside the first operation that
reads it. Boxes are coloured by role; each gives its label, its output
shape and, after backward, the norm of the gradient it received. Solid
arrows carry a gradient back; dashed grey ones, out of data, noise and
constants, carry none. No graphviz binary is needed.
"""
import textwrap
from dataclasses import dataclass

from minivae.app.plots import pyplot, save_figure

# role: (face colour, edge colour, border style)
STYLES = {
    "parameter": ("#dbe9f6", "#2b6ca3", "solid"),
    "data": ("#e2f0d9", "#548235", "solid"),
    "noise": ("#fbe3d6", "#c0504d", "dashed"),
    "constant": ("#eeeeee", "#999999", "solid"),
    "op": ("white", "#333333", "solid"),
}
LEGEND = {"parameter": "parameter (updated by the optimizer)", "data": "data x", "noise": "noise eps (a sample)",
          "constant": "constant", "op": "operation (its output)"}
CHAR_WIDTH, LINE_HEIGHT = 0.07, 0.15  # inches per character and per text line at the node font size
ROW_HEIGHT, GAP = 0.85, 0.3           # inches between rows, and at least between boxes in a row
TITLE_HEIGHT = 0.9                    # inches above the first row for the title and caption
LEGEND_WIDTH = 2.6                    # inches kept free for the legend, right of the drawing
SPOTLIGHT = ("mu", "logvar", "z", "z (sampled)")  # operations and leaves drawn with a heavier border


def node_text(node):
    """The label (a name beside its operation), the output shape, and the gradient's norm or that it has none."""
    label = node.label if not node.op or node.label == node.operation else f"{node.label} = {node.operation}"
    grad = "no gradient" if node.grad_norm is None else f"|grad| {node.grad_norm:.3g}"
    return "\n".join((label, "(" + ", ".join(map(str, node.shape)) + ")", grad))


@dataclass
class Box:
    """Where a node is drawn, in inches: its row (0 at the top), the centre, the width and height."""
    row: int
    x: float
    width: float
    height: float = 3 * LINE_HEIGHT + 0.14

    @property
    def y(self):
        return -self.row * ROW_HEIGHT

    @property
    def left(self):
        return self.x - self.width / 2

    @property
    def right(self):
        return self.x + self.width / 2


def layout(tape):
    """{node index: Box}: operations in rows by depth, each with its new leaves beside it, no two boxes overlapping.

    An operation is centred under the operations it reads (their mean x); it
    and the leaves it reads first form a group, and the groups of a row are
    pushed apart where they overlap.
    """
    first_reader = {}
    for edge in tape.edges:
        first_reader.setdefault(edge.source, edge.target)
    rows = {}
    for node in tape.nodes:
        if node.op:
            rows[node.index] = 1 + max((rows[n.index] for n in tape.inputs(node.index) if n.op), default=-1)
    boxes = {}
    for row in range(max(rows.values()) + 1):
        groups = []
        for index in (node.index for node in tape.nodes if rows.get(node.index) == row):
            inputs = tape.inputs(index)
            above = [boxes[n.index].x for n in inputs if n.op]
            leaves = [n.index for n in inputs if not n.op and first_reader[n.index] == index]
            groups.append(_group(tape, index, leaves, row, sum(above) / len(above) if above else 0.0, bool(above)))
        _spread(groups)
        boxes.update({index: box for group in groups for index, box in group.items()})
    return boxes


def _group(tape, reader, leaves, row, x, has_input_above):
    """{index: Box} of an operation at x and its leaves beside it: left and right of a first operation,
    to the right of one below another."""
    group = {reader: Box(row, x, _text_width(node_text(tape.nodes[reader])))}
    reach = {-1: group[reader].left, 1: group[reader].right}  # the group's outer edge on each side
    for k, leaf in enumerate(leaves):
        side = 1 if has_input_above else (-1) ** (k + 1)
        width = _text_width(node_text(tape.nodes[leaf]))
        group[leaf] = Box(row, reach[side] + side * (GAP + width / 2), width)
        reach[side] += side * (GAP + width)
    return group


def _text_width(text):
    return max(map(len, text.split("\n"))) * CHAR_WIDTH + 0.2


def _spread(groups):
    """Shift the groups of one row apart where they overlap, keeping their order and their mean position."""
    groups.sort(key=lambda group: next(iter(group.values())).x)
    shifts, reach = [], None
    for group in groups:
        left, right = min(b.left for b in group.values()), max(b.right for b in group.values())
        shift = 0.0 if reach is None else max(0.0, reach + GAP - left)
        shifts.append(shift)
        reach = right + shift
    middle = sum(shifts) / len(shifts)
    for group, shift in zip(groups, shifts):
        for box in group.values():
            box.x += shift - middle


def save_tape(path, tape, title, caption=""):
    """Draw ``tape`` (see the module docstring) into the PNG file ``path``, the legend to the right."""
    plt = pyplot()
    boxes = layout(tape)
    left = min(b.left for b in boxes.values()) - 0.9
    right = max(b.right for b in boxes.values()) + 0.9 + LEGEND_WIDTH
    bottom = min(b.y - b.height for b in boxes.values())
    top = max(b.y + b.height / 2 for b in boxes.values()) + TITLE_HEIGHT
    width, height = right - left, top - bottom
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_axis_off()
    for node in tape.nodes:
        _draw_node(ax, node, boxes[node.index])
    for edge in tape.edges:
        _draw_edge(ax, boxes, edge)
    _legend(ax, right, top)
    drawing_middle, drawing_width = (left + right - LEGEND_WIDTH) / 2, width - LEGEND_WIDTH
    wrapped = "\n".join(textwrap.wrap(caption, int(drawing_width / CHAR_WIDTH)))
    ax.text(drawing_middle, top - 0.1, title, ha="center", va="top", fontsize=10)
    ax.text(drawing_middle, top - 0.35, wrapped, ha="center", va="top", fontsize=8, linespacing=1.3)
    save_figure(fig, path)


def _draw_node(ax, node, box):
    from matplotlib.patches import FancyBboxPatch
    face, edge, style = STYLES[node.role]
    stands_out = node.role in ("data", "noise") or node.label in SPOTLIGHT
    ax.add_patch(FancyBboxPatch((box.left, box.y - box.height / 2), box.width, box.height,
                                boxstyle="round,pad=0,rounding_size=0.08", facecolor=face, edgecolor=edge,
                                linestyle=style, linewidth=1.6 if stands_out else 0.9, zorder=3))
    ax.text(box.x, box.y, node_text(node), ha="center", va="center", fontsize=8, zorder=4, linespacing=1.25,
            fontweight="bold" if stands_out else "normal", color="#222222" if node.grad_norm is not None else "#777777")


def _draw_edge(ax, boxes, edge):
    """An arrow from an input into the operation reading it, along ``_route``, with rounded corners."""
    from matplotlib.patches import FancyArrowPatch
    look = dict(arrowstyle="-|>", mutation_scale=9, shrinkA=0, shrinkB=1, zorder=2,
                color="#333333" if edge.carries_grad else "#999999", linewidth=1.0 if edge.carries_grad else 0.9,
                linestyle="solid" if edge.carries_grad else (0, (4, 3)))
    ax.add_patch(FancyArrowPatch(path=_rounded(_route(boxes, boxes[edge.source], boxes[edge.target])), **look))


def _route(boxes, source, target):
    """The corners of an edge's path: sideways from a leaf to its reader, a straight line where no box is in
    the way, else through the free space between rows and down a lane clear of the rows in between."""
    gap = (ROW_HEIGHT - source.height) / 2  # the free space above and below each row of boxes
    if target.row == source.row:
        toward = 1 if target.x > source.x else -1
        if not _boxes_between(boxes, source, target):
            return [(source.x + toward * source.width / 2, source.y), (target.x - toward * target.width / 2, target.y)]
        over = source.y + source.height / 2 + gap
        return [(source.x, over - gap), (source.x, over), (target.x, over), (target.x, over - gap)]
    start, end = (source.x, source.y - source.height / 2), (target.x, target.y + target.height / 2)
    between = [b for b in boxes.values() if source.row < b.row < target.row]
    if not any(_crosses(start, end, b) for b in between):
        return [start, end]
    lanes = (min(b.left for b in between) - GAP, max(b.right for b in between) + GAP)
    lane = min(lanes, key=lambda lane: abs(lane - source.x) + abs(lane - target.x))
    below, above = start[1] - gap, end[1] + gap
    return [start, (source.x, below), (lane, below), (lane, above), (target.x, above), end]


def _boxes_between(boxes, source, target):
    """The boxes of a row strictly between two of its boxes."""
    low, high = sorted((source.x, target.x))
    return [b for b in boxes.values() if b.row == source.row and low < b.x < high]


def _crosses(start, end, box):
    """Whether the straight line from start down to end passes through ``box``."""
    t = (start[1] - box.y) / (start[1] - end[1])
    return box.left - 0.05 < start[0] + t * (end[0] - start[0]) < box.right + 0.05


def _rounded(corners, radius=0.12):
    """A path through ``corners`` with each inner corner rounded by a quadratic curve."""
    from matplotlib.path import Path
    vertices, codes = [corners[0]], [Path.MOVETO]
    for before, corner, after in zip(corners, corners[1:], corners[2:]):
        r = min(radius, _distance(before, corner) / 2, _distance(corner, after) / 2)
        vertices += [_toward(corner, before, r), corner, _toward(corner, after, r)]
        codes += [Path.LINETO, Path.CURVE3, Path.CURVE3]
    return Path(vertices + [corners[-1]], codes + [Path.LINETO])


def _distance(a, b):
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5


def _toward(point, other, length):
    """The point ``length`` from ``point`` on the way to ``other``."""
    return (point[0] + (other[0] - point[0]) * length / (_distance(point, other) or 1.0),
            point[1] + (other[1] - point[1]) * length / (_distance(point, other) or 1.0))


def _legend(ax, right, top):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Patch(facecolor=face, edgecolor=edge, linestyle=style, label=LEGEND[role])
               for role, (face, edge, style) in STYLES.items()]
    handles += [Line2D([], [], color="#333333", lw=1.0, label="carries a gradient back"),
                Line2D([], [], color="#999999", lw=0.9, linestyle=(0, (4, 3)), label="carries no gradient")]
    ax.legend(handles=handles, loc="upper right", bbox_to_anchor=(right - 0.1, top - 0.1),
              bbox_transform=ax.transData, fontsize=7, frameon=True)


# ----- DOT, for graphviz users -----

def tape_dot(tape, title):
    """The tape in graphviz's DOT language (``dot -Tpng tape.dot -o tape.png``), styled as the picture."""
    lines = [f"digraph tape {{\n  label={_quoted(title)}; labelloc=t; rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    for node in tape.nodes:
        face, edge, style = STYLES[node.role]
        styles = "rounded,filled" + (",dashed" if style == "dashed" else "")
        lines.append(f'  n{node.index} [label={_quoted(node_text(node))}, fillcolor="{face}", color="{edge}", '
                     f'style="{styles}"];')
    for edge in tape.edges:
        look = "" if edge.carries_grad else ' [style=dashed, color="#aaaaaa"]'
        lines.append(f"  n{edge.source} -> n{edge.target}{look};")
    return "\n".join(lines) + "\n}\n"


def _quoted(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
