"""Framework-neutral adapter logic, in NumPy: the plan every framework's layer is built from
(``plan``, with its probe check), border modes and padding (``borders``), kernels from trained
weights (``learned``) and from other tools' files (``files``). The framework modules themselves
are ``registry.keras``, ``registry.torch``, ``registry.jax`` and ``registry.tensorflow``."""
