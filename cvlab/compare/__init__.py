"""compare-norms: one experiment trained under several norms × batch sizes × seeds, as sibling runs.

Every variant sees the same number of training samples (`steps` is the budget at the largest batch size; a
smaller batch takes proportionally more steps, with every step-counted setting scaled alike) and optimizer
settings scaled by its optimizer family's rule (linear for SGD, as the Group Normalization paper compares
them; square-root with the moving averages' horizons kept in samples for AdamW and Adadelta); report.md
states the protocol.
Each variant is a normal run directory written by `engine.train.loop.train`, so TensorBoard overlays them.

Modules, in import order: `grid` (the variants) <- `worker` (one variant) <- `launchers` (where variants train)
<- `study` (the comparison) -> `report` (outputs, with `stats` and `probes`).
"""

from .grid import Variant, make_variants
from .probes import smoothness
from .report import table_rows
from .study import compare_norms

__all__ = ["Variant", "compare_norms", "make_variants", "smoothness", "table_rows"]
