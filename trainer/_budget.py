"""How `--budget` is spent: one owner for the default and the stages' shares.

Torch-free, so the command line shows the same numbers in `--help` as the trainer uses.
"""

from __future__ import annotations

DEFAULT_BUDGET = 45.0  # minutes: a whole run on MovieLens-size data on a 2-core CPU (Office-size: 20-22 min)
TEXT_SHARE = 0.5  # of the budget, at most, for objective `text` (MovieLens warm: 4 + 16 epochs, 16.6 min beside a run)
TRAIN_SHARE = 0.85  # of the budget, at most, until the user phases stop
TEST_LIKE_SHARE = 0.9  # of the budget, at most, until the test-like validation ends (export takes the rest)
