"""Live demos for lectures: ipywidgets controls backed by robustlab functions.

Each demo is a small class whose ``update(...)`` method computes what the demo shows
(so it can be tested and reused without a browser) and whose ``widget()`` method
builds the ipywidgets controls around it. ipywidgets is imported only when a widget is
built.

The static book cannot run a kernel behind a slider, so every demo also has a
``snapshot(...)`` method: one matplotlib figure showing several settings side by side.
Chapters show the live widget in Jupyter, Colab and Binder, and the snapshot in print.

One submodule per chapter topic; every demo is importable from here.
"""

from .attacks import AttackExplorer
from .certify import BoundsExplorer
from .training import DeltaBallDemo
from .features import TradeoffExplorer
from .smoothing import SmoothingExplorer
from .dp import DPConditionExplorer
from .theory import ConcentrationExplorer
from .robuststats import EpsBumpExplorer
from .poisoning import PoisoningExplorer

__all__ = ["AttackExplorer", "BoundsExplorer", "DeltaBallDemo", "TradeoffExplorer", "SmoothingExplorer", "DPConditionExplorer", "ConcentrationExplorer", "EpsBumpExplorer", "PoisoningExplorer"]
from .patch import AblationBudgetExplorer, PatchVoteExplorer; __all__ += ["PatchVoteExplorer", "AblationBudgetExplorer"]  # noqa: E402,E702
from .l1 import DSSNExplorer; __all__ += ["DSSNExplorer"]  # noqa: E402,E702
from .perceptual import PerceptualBudgetExplorer; __all__ += ["PerceptualBudgetExplorer"]  # noqa: E402,E702
from .lipschitz import ConvBoundExplorer; __all__ += ["ConvBoundExplorer"]  # noqa: E402,E702
from .policy import PolicySmoothingExplorer; __all__ += ["PolicySmoothingExplorer"]  # noqa: E402,E702
from .second_order import SecondOrderExplorer; __all__ += ["SecondOrderExplorer"]  # noqa: E402,E702
from .shift import ShiftExplorer; __all__ += ["ShiftExplorer"]  # noqa: E402,E702
