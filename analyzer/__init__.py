"""smtpflow: why does mail to Microsoft 365 get through or not — answered from packets.

Layers, each a sub-package, dependencies pointing one way::

    capture  →  decode  →  flows  →  protocols  →  diagnosis  →  report

"""

__version__ = "0.1.0"
