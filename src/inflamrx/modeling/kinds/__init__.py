"""Model kinds: one module per ``model.kind``, each implementing ``base.ModelKind``.

``base.kind_of(name)`` imports ``inflamrx.modeling.kinds.<name>`` and returns its ``KIND``.
"""
