"""SHVYA: AI sales engagement over WhatsApp and email."""

__version__ = "0.1.0"
