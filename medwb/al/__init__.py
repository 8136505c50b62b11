"""Active learning: MC-dropout uncertainty, acquisition strategies, auto-labels, the label audit and the loop.

Import the module you need (``from medwb.al.acquire import select``); nothing is imported eagerly.
"""
