"""Everything a person sees in Jupyter: viewers (``view``) and the ipywidgets front ends (``widgets``).

The only package that imports ipywidgets or IPython.display. Import the module you need.
"""
