"""Executors run a plan's stages. ``local`` runs them in this process; ``ray`` on a Ray cluster."""
