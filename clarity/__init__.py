"""CLARiTy (arXiv 2512.16700): class-token ViT with SegmentCAM; registers method `clarity`."""
