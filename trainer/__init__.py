"""Training and export for lmrec (extra `train`: torch, transformers, optimum).

Heavy imports stay inside the modules that need them, so `import lmrec.trainer` is cheap and
says which extra is missing when a feature is used without it.
"""

from __future__ import annotations
