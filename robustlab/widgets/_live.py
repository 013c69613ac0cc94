"""The wiring every live demo shares: controls above an output area redrawn on each change."""

from __future__ import annotations

import base64
import contextlib
import io
import traceback
from typing import Callable, Sequence

__all__ = ["live", "render"]


def render(draw: Callable) -> tuple:
    """Run ``draw()`` and return what it showed as notebook outputs (nbformat dicts).

    What ``draw`` prints (stdout and stderr, warnings included) becomes stream outputs; the
    matplotlib figure it returns is laid out, rendered to PNG as the inline backend would
    show it, and closed. ``draw`` returns ``None`` when it drew nothing (e.g. it printed
    why a combination of controls is not available).
    """
    import matplotlib.pyplot as plt

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        fig = draw()
    outputs = [{"output_type": "stream", "name": name, "text": buf.getvalue()}
               for name, buf in (("stdout", out), ("stderr", err)) if buf.getvalue()]
    if fig is not None:
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", bbox_inches="tight")
        plt.close(fig)
        outputs.append({"output_type": "display_data", "metadata": {},
                        "data": {"image/png": base64.b64encode(png.getvalue()).decode("ascii"),
                                 "text/plain": f"<Figure size {fig.get_size_inches()[0]:g}x"
                                               f"{fig.get_size_inches()[1]:g} in>"}})
    return tuple(outputs)


def live(rows: Sequence[Sequence], draw: Callable):
    """Display ``rows`` of ipywidgets controls above an output area and return the ``VBox``.

    ``draw()`` runs once now and again whenever a control's value changes; what it shows
    (see :func:`render`) replaces the output area's contents in one update, so the area
    never flickers empty. A failure on the first draw raises; a failure after a control
    change is shown in the output area as a traceback.

    The output area's contents are set directly instead of being captured with
    ``with output:``: a captured output makes notebook executors that mimic the front end
    (nbclient, used by Jupyter Book, nbconvert and Voila) send messages to the kernel on the
    channel they are reading replies from, which can stall them until their cell timeout
    (nbclient issue 312).
    """
    import ipywidgets as W
    from IPython.display import display

    out = W.Output()

    def redraw(*_):
        try:
            out.outputs = render(draw)
        except Exception as e:  # a control change must not kill the demo: show what went wrong
            out.outputs = ({"output_type": "error", "ename": type(e).__name__, "evalue": str(e),
                            "traceback": traceback.format_exception(type(e), e, e.__traceback__)},)

    for row in rows:
        for control in row:
            control.observe(redraw, names="value")
    out.outputs = render(draw)
    box = W.VBox([W.HBox(list(row)) for row in rows] + [out])
    display(box)
    return box
