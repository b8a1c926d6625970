"""Genome-wide association studies that agree with PLINK 2 ``--glm``.

Readers of PLINK files (:mod:`.plink_io`), per-variant regression kernels on NumPy or
PyTorch (:mod:`.kernels`, :mod:`.firth`), the streaming driver (:mod:`.association`),
variant filters and principal components (:mod:`.qc`), writers (:mod:`.report`) and
Manhattan/QQ plots with genomic inflation (:mod:`.plots`).
"""
