"""callcentre: a call-centre integration server for property-management service hotlines on Asterisk."""

__version__ = "0.1.0"
