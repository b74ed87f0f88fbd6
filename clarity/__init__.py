"""CLARiTy (arXiv 2512.16700): class-token ViT with SegmentCAM; registers method `clarity`.

Importing this package registers `clarity`, `clarity-s16-224` and `clarity-s16-512` (the entry
point `clarity = "clarity"` in pyproject.toml does the import). See docs/clarity.md.
"""

from clarity.config import ARCHS, ClarityConfig
from clarity.method import Clarity
from clarity.model import ClarityNet

__all__ = ["ARCHS", "Clarity", "ClarityConfig", "ClarityNet"]
