"""fedmodel's Flower ClientApp (``clients.app:app``)."""
