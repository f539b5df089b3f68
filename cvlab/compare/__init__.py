"""compare-norms: one experiment trained under several norms × batch sizes × seeds, as sibling runs.

Every variant sees the same number of training samples (`steps` is the budget at the largest batch size; a
smaller batch takes proportionally more steps, with eval/warmup/log intervals scaled alike) and, unless told
otherwise, a learning rate scaled linearly with its batch size (as the Group Normalization paper compares them).
Each variant is a normal run directory written by `engine.train.train`, so TensorBoard overlays them.
"""

from .probes import smoothness
from .report import table_rows
from .variants import Variant, compare_norms, make_variants

__all__ = ["Variant", "compare_norms", "make_variants", "smoothness", "table_rows"]
