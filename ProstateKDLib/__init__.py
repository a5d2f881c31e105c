"""ProstateKD: prostate MRI segmentation with knowledge-distilled students.

Pure Python library (no ``slicer``/``qt``/``vtk`` imports except in the MRML
logic module). Heavy imports (torch, monai) happen inside the modules that
need them, so ``import ProstateKDLib`` stays fast.
"""

__version__ = "0.1.0"
