"""Signed outbound webhooks: a company's other systems told what happened (docs/webhooks.md)."""
