"""fedmodel's Flower ServerApp (``server.app:app``)."""
