"""The local CRM and ERP stack: install, prepare, serve, seed and inspect both systems."""
