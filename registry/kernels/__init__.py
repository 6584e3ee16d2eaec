"""What kernels mean: the ``Kernel`` object, the filter formulas, the parametric families, the
built-in database, the provenance claims kreg can check and the one record builder."""
