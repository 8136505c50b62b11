"""Validation reports: statistics (``stats``), figures (``figures``) and the papermill build (``build``)."""
