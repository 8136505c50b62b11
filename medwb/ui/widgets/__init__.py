"""ipywidgets front ends of medwb, one module each (explore, review, verdict).

Import the module you need (``from medwb.ui.widgets.explore import SliceBrowser``); this package imports nothing
itself so that loading one widget never pulls in the others' dependencies.
"""
