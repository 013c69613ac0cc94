"""The wiring every live demo shares: controls above an output area redrawn on each change."""

from __future__ import annotations

from typing import Callable, Sequence

__all__ = ["live"]


def live(rows: Sequence[Sequence], draw: Callable):
    """Display ``rows`` of ipywidgets controls above an output area and return the ``VBox``.

    ``draw()`` runs once now and again whenever a control's value changes, with its output
    (figures, prints) captured in the output area, which is cleared first. It returns the
    matplotlib figure it drew, which is laid out and shown, or ``None`` when it drew
    nothing (e.g. it printed why a combination of controls is not available).
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

    out = W.Output()

    def redraw(*_):
        out.clear_output(wait=True)
        with out:
            fig = draw()
            if fig is not None:
                fig.tight_layout()
                plt.show()

    for row in rows:
        for control in row:
            control.observe(redraw, names="value")
    redraw()
    box = W.VBox([W.HBox(list(row)) for row in rows] + [out])
    display(box)
    return box
