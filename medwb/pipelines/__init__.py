"""Whole jobs built from the modules below them: explore, simulate, the demo, ``medwb bench`` and the
papermill notebook runner. Import the module you need; nothing is imported eagerly.
"""
