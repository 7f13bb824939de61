"""captum-ext: published explanation methods as Captum attributions.

Subpackages: :mod:`captum_ext.attr` (methods), :mod:`captum_ext.metrics`,
:mod:`captum_ext.visualization`, :mod:`captum_ext.models`, :mod:`captum_ext.datasets`.
"""

from captum_ext._validation import resolve_layer

__version__ = "0.1.0"

__all__ = ["__version__", "resolve_layer"]
