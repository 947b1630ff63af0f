"""ct-tune: analyze and tune Linux netfilter connection tracking."""

__version__ = "0.1.0"
