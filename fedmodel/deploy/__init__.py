"""Deploying fedmodel on Flower's deployment engine: certificates, node keys, a loopback trial, data checks."""
